-- CRM reference data: federal districts, the 85 federal subjects, branches and service areas,
-- channels, the topic tree, queues (skill groups with routing rules) and tariffs.
-- Idempotent upserts: safe on every start, and they complete the 8 regions, 3 channels, 5 topics
-- and 3 queues that the skeleton's generator (hrdv/generator.py) may have inserted before.
-- Applied by hrdv.crm.reference.apply(conn), after sql/crm/schema.sql.

INSERT INTO federal_districts (code, name) VALUES
    ('CFO',  'Центральный федеральный округ'),
    ('SZFO', 'Северо-Западный федеральный округ'),
    ('YUFO', 'Южный федеральный округ'),
    ('SKFO', 'Северо-Кавказский федеральный округ'),
    ('PFO',  'Приволжский федеральный округ'),
    ('UFO',  'Уральский федеральный округ'),
    ('SFO',  'Сибирский федеральный округ'),
    ('DFO',  'Дальневосточный федеральный округ')
ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name;

-- ISO 3166-2:RU codes; RU-CR and RU-SEV (not in ISO 3166-2:RU) for Crimea and Sevastopol.
-- utc_offset: the region's administrative centre (Yakutia spans +9..+11: Yakutsk is +9).
-- population_thousands: 2021 census, rounded; only a weight for generated customers.
INSERT INTO regions (code, name, utc_offset, federal_district_code, population_thousands) VALUES
    -- Центральный
    ('RU-BEL', 'Белгородская область', 3, 'CFO', 1531),
    ('RU-BRY', 'Брянская область', 3, 'CFO', 1169),
    ('RU-VLA', 'Владимирская область', 3, 'CFO', 1343),
    ('RU-VOR', 'Воронежская область', 3, 'CFO', 2306),
    ('RU-IVA', 'Ивановская область', 3, 'CFO', 971),
    ('RU-KLU', 'Калужская область', 3, 'CFO', 1071),
    ('RU-KOS', 'Костромская область', 3, 'CFO', 580),
    ('RU-KRS', 'Курская область', 3, 'CFO', 1082),
    ('RU-LIP', 'Липецкая область', 3, 'CFO', 1143),
    ('RU-MOS', 'Московская область', 3, 'CFO', 8525),
    ('RU-ORL', 'Орловская область', 3, 'CFO', 714),
    ('RU-RYA', 'Рязанская область', 3, 'CFO', 1102),
    ('RU-SMO', 'Смоленская область', 3, 'CFO', 889),
    ('RU-TAM', 'Тамбовская область', 3, 'CFO', 983),
    ('RU-TVE', 'Тверская область', 3, 'CFO', 1230),
    ('RU-TUL', 'Тульская область', 3, 'CFO', 1502),
    ('RU-YAR', 'Ярославская область', 3, 'CFO', 1209),
    ('RU-MOW', 'Москва', 3, 'CFO', 13010),
    -- Северо-Западный
    ('RU-KR',  'Республика Карелия', 3, 'SZFO', 533),
    ('RU-KO',  'Республика Коми', 3, 'SZFO', 737),
    ('RU-ARK', 'Архангельская область', 3, 'SZFO', 978),
    ('RU-NEN', 'Ненецкий автономный округ', 3, 'SZFO', 42),
    ('RU-VLG', 'Вологодская область', 3, 'SZFO', 1142),
    ('RU-KGD', 'Калининградская область', 2, 'SZFO', 1029),
    ('RU-LEN', 'Ленинградская область', 3, 'SZFO', 2000),
    ('RU-MUR', 'Мурманская область', 3, 'SZFO', 667),
    ('RU-NGR', 'Новгородская область', 3, 'SZFO', 584),
    ('RU-PSK', 'Псковская область', 3, 'SZFO', 599),
    ('RU-SPE', 'Санкт-Петербург', 3, 'SZFO', 5602),
    -- Южный
    ('RU-AD',  'Республика Адыгея', 3, 'YUFO', 497),
    ('RU-KL',  'Республика Калмыкия', 3, 'YUFO', 268),
    ('RU-CR',  'Республика Крым', 3, 'YUFO', 1934),
    ('RU-KDA', 'Краснодарский край', 3, 'YUFO', 5838),
    ('RU-AST', 'Астраханская область', 4, 'YUFO', 960),
    ('RU-VGG', 'Волгоградская область', 3, 'YUFO', 2500),
    ('RU-ROS', 'Ростовская область', 3, 'YUFO', 4200),
    ('RU-SEV', 'Севастополь', 3, 'YUFO', 547),
    -- Северо-Кавказский
    ('RU-DA',  'Республика Дагестан', 3, 'SKFO', 3183),
    ('RU-IN',  'Республика Ингушетия', 3, 'SKFO', 510),
    ('RU-KB',  'Кабардино-Балкарская Республика', 3, 'SKFO', 904),
    ('RU-KC',  'Карачаево-Черкесская Республика', 3, 'SKFO', 469),
    ('RU-SE',  'Республика Северная Осетия — Алания', 3, 'SKFO', 687),
    ('RU-CE',  'Чеченская Республика', 3, 'SKFO', 1511),
    ('RU-STA', 'Ставропольский край', 3, 'SKFO', 2908),
    -- Приволжский
    ('RU-BA',  'Республика Башкортостан', 5, 'PFO', 4091),
    ('RU-ME',  'Республика Марий Эл', 3, 'PFO', 677),
    ('RU-MO',  'Республика Мордовия', 3, 'PFO', 783),
    ('RU-TA',  'Республика Татарстан', 3, 'PFO', 4004),
    ('RU-UD',  'Удмуртская Республика', 4, 'PFO', 1452),
    ('RU-CU',  'Чувашская Республика', 3, 'PFO', 1186),
    ('RU-PER', 'Пермский край', 5, 'PFO', 2532),
    ('RU-KIR', 'Кировская область', 3, 'PFO', 1153),
    ('RU-NIZ', 'Нижегородская область', 3, 'PFO', 3120),
    ('RU-ORE', 'Оренбургская область', 5, 'PFO', 1863),
    ('RU-PNZ', 'Пензенская область', 3, 'PFO', 1266),
    ('RU-SAM', 'Самарская область', 4, 'PFO', 3172),
    ('RU-SAR', 'Саратовская область', 4, 'PFO', 2442),
    ('RU-ULY', 'Ульяновская область', 4, 'PFO', 1196),
    -- Уральский
    ('RU-KGN', 'Курганская область', 5, 'UFO', 777),
    ('RU-SVE', 'Свердловская область', 5, 'UFO', 4268),
    ('RU-TYU', 'Тюменская область', 5, 'UFO', 1601),
    ('RU-CHE', 'Челябинская область', 5, 'UFO', 3431),
    ('RU-KHM', 'Ханты-Мансийский автономный округ — Югра', 5, 'UFO', 1711),
    ('RU-YAN', 'Ямало-Ненецкий автономный округ', 5, 'UFO', 511),
    -- Сибирский
    ('RU-AL',  'Республика Алтай', 7, 'SFO', 211),
    ('RU-TY',  'Республика Тыва', 7, 'SFO', 337),
    ('RU-KK',  'Республика Хакасия', 7, 'SFO', 535),
    ('RU-ALT', 'Алтайский край', 7, 'SFO', 2164),
    ('RU-KYA', 'Красноярский край', 7, 'SFO', 2857),
    ('RU-IRK', 'Иркутская область', 8, 'SFO', 2371),
    ('RU-KEM', 'Кемеровская область — Кузбасс', 7, 'SFO', 2600),
    ('RU-NVS', 'Новосибирская область', 7, 'SFO', 2798),
    ('RU-OMS', 'Омская область', 6, 'SFO', 1858),
    ('RU-TOM', 'Томская область', 7, 'SFO', 1062),
    -- Дальневосточный
    ('RU-BU',  'Республика Бурятия', 8, 'DFO', 979),
    ('RU-SA',  'Республика Саха (Якутия)', 9, 'DFO', 996),
    ('RU-ZAB', 'Забайкальский край', 9, 'DFO', 1004),
    ('RU-KAM', 'Камчатский край', 12, 'DFO', 291),
    ('RU-PRI', 'Приморский край', 10, 'DFO', 1845),
    ('RU-KHA', 'Хабаровский край', 10, 'DFO', 1292),
    ('RU-AMU', 'Амурская область', 9, 'DFO', 772),
    ('RU-MAG', 'Магаданская область', 11, 'DFO', 136),
    ('RU-SAK', 'Сахалинская область', 11, 'DFO', 466),
    ('RU-YEV', 'Еврейская автономная область', 10, 'DFO', 150),
    ('RU-CHU', 'Чукотский автономный округ', 12, 'DFO', 48)
ON CONFLICT (code) DO UPDATE SET
    name = EXCLUDED.name, utc_offset = EXCLUDED.utc_offset,
    federal_district_code = EXCLUDED.federal_district_code,
    population_thousands = EXCLUDED.population_thousands;

-- Branches: 1 to 4 per region by population (one per ~2.5 million people, at least one);
-- service areas: 2 or 3 per branch. Deterministic: counts depend only on the region's row.
INSERT INTO branches (code, name, region_code)
SELECT r.code || '-B' || b, 'Филиал ' || b || ' — ' || r.name, r.code
FROM regions r
CROSS JOIN LATERAL generate_series(1, least(4, 1 + coalesce(r.population_thousands, 0) / 2500)) AS b
ON CONFLICT (code) DO NOTHING;

INSERT INTO service_areas (code, name, branch_code)
SELECT b.code || '-S' || s, 'Сервисный участок ' || s || ', ' || b.name, b.code
FROM branches b
CROSS JOIN LATERAL generate_series(1, 2 + (right(b.code, 1)::int % 2)) AS s
ON CONFLICT (code) DO NOTHING;

INSERT INTO channels (code, name) VALUES
    ('call', 'Звонок'),
    ('chat', 'Чат'),
    ('web', 'Веб-заявка'),
    ('email', 'Электронная почта'),
    ('messenger', 'Мессенджер'),
    ('office', 'Визит в офис')
ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name;

-- The topic tree: parents first (parent_code references topics).
INSERT INTO topics (code, name, parent_code) VALUES
    ('internet', 'Интернет', NULL),
    ('tv', 'Телевидение', NULL),
    ('mobile', 'Мобильная связь', NULL),
    ('billing', 'Счета и оплата', NULL),
    ('equipment', 'Оборудование', NULL),
    ('moving', 'Переезд', NULL),
    ('other', 'Прочее', NULL)
ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, parent_code = EXCLUDED.parent_code;

INSERT INTO topics (code, name, parent_code) VALUES
    ('internet.no_link', 'Нет подключения к интернету', 'internet'),
    ('internet.slow', 'Низкая скорость', 'internet'),
    ('internet.unstable', 'Обрывы соединения', 'internet'),
    ('internet.wifi', 'Настройка Wi-Fi', 'internet'),
    ('tv.no_signal', 'Нет сигнала ТВ', 'tv'),
    ('tv.channels', 'Пакеты каналов', 'tv'),
    ('tv.quality', 'Качество изображения', 'tv'),
    ('mobile.no_service', 'Нет сети', 'mobile'),
    ('mobile.roaming', 'Роуминг', 'mobile'),
    ('mobile.sim', 'SIM-карта и номер', 'mobile'),
    ('billing.invoice', 'Вопрос по счёту', 'billing'),
    ('billing.payment', 'Оплата не поступила', 'billing'),
    ('billing.tariff_change', 'Смена тарифа', 'billing'),
    ('billing.refund', 'Возврат средств', 'billing'),
    ('equipment.router', 'Роутер', 'equipment'),
    ('equipment.set_top_box', 'ТВ-приставка', 'equipment'),
    ('equipment.return', 'Возврат оборудования', 'equipment'),
    ('moving.new_address', 'Перенос услуг на новый адрес', 'moving'),
    ('moving.suspend', 'Приостановка услуг', 'moving'),
    ('other.feedback', 'Отзыв', 'other'),
    ('other.complaint', 'Жалоба на обслуживание', 'other'),
    ('other.info', 'Справочная информация', 'other')
ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, parent_code = EXCLUDED.parent_code;

-- Queues = skill groups. call, chat and messenger have three skill groups (technical support,
-- billing, general); web, e-mail and office one general queue each. skill_group is
-- '<channel>_<skill>' (call_tech, web_general, ...): operators carry the same value. The skeleton's q_call,
-- q_chat, q_web keep their codes and become the general queues of their channels.
INSERT INTO queues (code, name, channel_code, skill_group, routing_rule)
SELECT q.code, q.name, q.channel, q.channel || '_' || q.skill_group,
       jsonb_build_object('channels', jsonb_build_array(q.channel), 'topics', q.topics)
FROM (VALUES
    ('q_call_tech', 'Звонки: техподдержка', 'call', 'tech', '["internet", "tv", "equipment"]'::jsonb),
    ('q_call_billing', 'Звонки: счета и тарифы', 'call', 'billing', '["billing", "mobile"]'),
    ('q_call', 'Звонки: общие вопросы', 'call', 'general', '["moving", "other"]'),
    ('q_chat_tech', 'Чат: техподдержка', 'chat', 'tech', '["internet", "tv", "equipment"]'),
    ('q_chat_billing', 'Чат: счета и тарифы', 'chat', 'billing', '["billing", "mobile"]'),
    ('q_chat', 'Чат: общие вопросы', 'chat', 'general', '["moving", "other"]'),
    ('q_messenger_tech', 'Мессенджер: техподдержка', 'messenger', 'tech', '["internet", "tv", "equipment"]'),
    ('q_messenger_billing', 'Мессенджер: счета и тарифы', 'messenger', 'billing', '["billing", "mobile"]'),
    ('q_messenger', 'Мессенджер: общие вопросы', 'messenger', 'general', '["moving", "other"]'),
    ('q_web', 'Веб-заявки', 'web', 'general', '["internet", "tv", "mobile", "billing", "equipment", "moving", "other"]'),
    ('q_email', 'Электронная почта', 'email', 'general', '["internet", "tv", "mobile", "billing", "equipment", "moving", "other"]'),
    ('q_office', 'Офисы обслуживания', 'office', 'general', '["internet", "tv", "mobile", "billing", "equipment", "moving", "other"]')
) AS q (code, name, channel, skill_group, topics)
-- A queue's skill group and routing rule are the CRM's own once set (the live generator
-- re-assigns them now and then): a re-apply on start-up fills them in, it never reverts them.
ON CONFLICT (code) DO UPDATE SET
    name = EXCLUDED.name, channel_code = EXCLUDED.channel_code,
    skill_group = coalesce(queues.skill_group, EXCLUDED.skill_group),
    routing_rule = coalesce(queues.routing_rule, EXCLUDED.routing_rule);

INSERT INTO tariffs (code, name, includes_internet, includes_tv, includes_mobile, monthly_fee) VALUES
    ('inet_100', 'Интернет 100', true, false, false, 550),
    ('inet_500', 'Интернет 500', true, false, false, 750),
    ('inet_1000', 'Интернет 1000', true, false, false, 950),
    ('inet_tv', 'Интернет + ТВ', true, true, false, 900),
    ('tv_basic', 'Цифровое ТВ', false, true, false, 350),
    ('mobile_s', 'Мобильный S', false, false, true, 400),
    ('combo_family', 'Семейный: интернет, ТВ, мобильная связь', true, true, true, 1400),
    ('combo_max', 'Максимум: интернет 1000, ТВ, мобильная связь', true, true, true, 1900)
ON CONFLICT (code) DO UPDATE SET
    name = EXCLUDED.name, includes_internet = EXCLUDED.includes_internet,
    includes_tv = EXCLUDED.includes_tv, includes_mobile = EXCLUDED.includes_mobile,
    monthly_fee = EXCLUDED.monthly_fee;
