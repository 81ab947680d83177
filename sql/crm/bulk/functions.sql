-- Deterministic pseudo-random helpers for the bulk initial load (hrdv/crm/bulk_load.py).
-- Every generated value is a pure function of (seed, salt, id): chunks can run in any order on
-- any number of connections and the same seed gives the same rows. hashint8extended is
-- PostgreSQL's own 64-bit hash (stable for a given major version). The functions are one-line
-- IMMUTABLE SQL so that the planner inlines them: no function-call overhead per row.
-- The schema crm_bulk is scaffolding: the loader drops it when it is done.
CREATE SCHEMA IF NOT EXISTS crm_bulk;

-- Uniform in [0, 1): the low 52 bits of the hash, as a double.
CREATE OR REPLACE FUNCTION crm_bulk.u(seed bigint, salt integer, id bigint) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (hashint8extended(id, seed * 1000003 + salt) & 4503599627370495)::float8
           / 4503599627370496.0
$$;

-- Standard normal (Box-Muller over two independent uniforms).
CREATE OR REPLACE FUNCTION crm_bulk.normal(seed bigint, salt integer, id bigint) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sqrt(-2.0 * ln(1.0 - crm_bulk.u(seed, salt, id)))
           * cos(2.0 * pi() * crm_bulk.u(seed, salt + 500000, id))
$$;

-- Log-normal duration in seconds with the given median, capped at 40 days so that a far tail
-- cannot push a lifecycle past any sensible horizon.
CREATE OR REPLACE FUNCTION crm_bulk.lognormal(seed bigint, salt integer, id bigint,
                                              median_s float8, sigma float8) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT least(median_s * exp(sigma * crm_bulk.normal(seed, salt, id)), 3456000.0)
$$;

-- 1-based index of a weighted choice: thresholds are the cumulative weights without the last
-- one (n-1 values for n choices), u is uniform in [0, 1).
CREATE OR REPLACE FUNCTION crm_bulk.pick(u float8, thresholds float8[]) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT width_bucket(u, thresholds) + 1
$$;

-- One element of a non-empty array, uniformly.
CREATE OR REPLACE FUNCTION crm_bulk.any_of(u float8, items anyarray) RETURNS anyelement
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT items[1 + floor(u * cardinality(items))::integer]
$$;

-- Surnames in their masculine form, all ending in -ов/-ев/-ин/-ын so that +а is the feminine.
CREATE OR REPLACE FUNCTION crm_bulk.surname(seed bigint, salt integer, id bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT crm_bulk.any_of(crm_bulk.u(seed, salt, id), ARRAY[
        'Иванов', 'Смирнов', 'Кузнецов', 'Попов', 'Васильев', 'Петров', 'Соколов', 'Михайлов',
        'Новиков', 'Фёдоров', 'Морозов', 'Волков', 'Алексеев', 'Лебедев', 'Семёнов', 'Егоров',
        'Павлов', 'Козлов', 'Степанов', 'Николаев', 'Орлов', 'Андреев', 'Макаров', 'Никитин',
        'Захаров', 'Зайцев', 'Соловьёв', 'Борисов', 'Яковлев', 'Григорьев', 'Романов',
        'Воробьёв', 'Сергеев', 'Кузьмин', 'Фролов', 'Александров', 'Дмитриев', 'Королёв',
        'Гусев', 'Киселёв', 'Ильин', 'Максимов', 'Поляков', 'Сорокин', 'Виноградов', 'Ковалёв',
        'Белов', 'Медведев', 'Антонов', 'Тарасов', 'Жуков', 'Баранов', 'Филиппов', 'Комаров',
        'Давыдов', 'Беляев', 'Герасимов', 'Богданов', 'Осипов', 'Сидоров', 'Матвеев', 'Титов',
        'Марков', 'Миронов', 'Крылов', 'Куликов', 'Карпов', 'Власов', 'Мельников', 'Денисов',
        'Гаврилов', 'Тихонов', 'Казаков', 'Афанасьев', 'Данилов', 'Савельев', 'Тимофеев',
        'Фомин', 'Чернов', 'Абрамов', 'Мартынов', 'Ефимов', 'Федотов', 'Щербаков', 'Назаров',
        'Калинин', 'Исаев', 'Чернышёв', 'Быков', 'Маслов', 'Родионов', 'Коновалов', 'Лазарев',
        'Воронин', 'Климов', 'Филатов', 'Пономарёв', 'Голубев', 'Кудрявцев', 'Прохоров'])
$$;

-- "Surname Name Patronymic", feminine for about half of the people.
CREATE OR REPLACE FUNCTION crm_bulk.full_name(seed bigint, salt integer, id bigint, surname text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN crm_bulk.u(seed, salt, id) < 0.53
        THEN surname || 'а '
             || crm_bulk.any_of(crm_bulk.u(seed, salt + 1, id), ARRAY[
                'Анна', 'Мария', 'Елена', 'Ольга', 'Наталья', 'Татьяна', 'Ирина', 'Светлана',
                'Екатерина', 'Юлия', 'Анастасия', 'Галина', 'Людмила', 'Марина', 'Дарья',
                'Валентина', 'Надежда', 'Оксана', 'Виктория', 'Ксения', 'Алина', 'Полина',
                'Вера', 'Любовь', 'Александра', 'Софья', 'Елизавета', 'Кристина', 'Нина', 'Зоя'])
             || ' ' || crm_bulk.any_of(crm_bulk.u(seed, salt + 2, id), ARRAY[
                'Александровна', 'Сергеевна', 'Владимировна', 'Андреевна', 'Алексеевна',
                'Дмитриевна', 'Николаевна', 'Ивановна', 'Михайловна', 'Викторовна', 'Петровна',
                'Юрьевна', 'Олеговна', 'Игоревна', 'Евгеньевна', 'Павловна', 'Анатольевна',
                'Васильевна', 'Геннадьевна', 'Борисовна'])
        ELSE surname || ' '
             || crm_bulk.any_of(crm_bulk.u(seed, salt + 1, id), ARRAY[
                'Александр', 'Сергей', 'Дмитрий', 'Андрей', 'Алексей', 'Максим', 'Евгений',
                'Иван', 'Михаил', 'Артём', 'Николай', 'Владимир', 'Денис', 'Павел', 'Игорь',
                'Роман', 'Олег', 'Виктор', 'Юрий', 'Антон', 'Кирилл', 'Никита', 'Илья', 'Егор',
                'Константин', 'Вадим', 'Василий', 'Григорий', 'Тимур', 'Руслан'])
             || ' ' || crm_bulk.any_of(crm_bulk.u(seed, salt + 2, id), ARRAY[
                'Александрович', 'Сергеевич', 'Владимирович', 'Андреевич', 'Алексеевич',
                'Дмитриевич', 'Николаевич', 'Иванович', 'Михайлович', 'Викторович', 'Петрович',
                'Юрьевич', 'Олегович', 'Игоревич', 'Евгеньевич', 'Павлович', 'Анатольевич',
                'Васильевич', 'Геннадьевич', 'Борисович'])
    END
$$;
