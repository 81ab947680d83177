-- Operators (ids 1..n_operators) and engineers (the next n_engineers ids). The loader computes
-- who goes where (skill groups in proportion to each queue's expected load, engineers in
-- proportion to each service area's population) and passes it as arrays indexed by position.
INSERT INTO employees (id, full_name, role, site, skill_group, region_code, service_area_code,
                       specialisation, shift, hired_at)
SELECT o.id,
       crm_bulk.full_name(%(seed)s, 31, o.id, crm_bulk.surname(%(seed)s, 30, o.id)),
       'operator',
       CASE WHEN o.skill LIKE 'office_%%' THEN 'Офис обслуживания, ' || r.name
            ELSE (%(site_names)s::text[])[o.site_i] END,
       o.skill,
       CASE WHEN o.skill LIKE 'office_%%' THEN o.office_region
            ELSE (%(site_regions)s::text[])[o.site_i] END,
       NULL, NULL,
       -- offices close at night; contact centres staff all three shifts
       CASE WHEN o.shift_u < 0.6 OR (o.skill LIKE 'office_%%' AND o.shift_u < 0.9) THEN 'day'
            WHEN o.shift_u < 0.88 OR o.skill LIKE 'office_%%' THEN 'evening'
            ELSE 'night' END,
       %(as_of)s::timestamptz - crm_bulk.u(%(seed)s, 35, o.id) * interval '3650 days'
FROM (SELECT id,
             (%(operator_skills)s::text[])[id] AS skill,
             crm_bulk.pick(crm_bulk.u(%(seed)s, 32, id), %(site_cum)s::float8[]) AS site_i,
             (%(regions)s::text[])[crm_bulk.pick(crm_bulk.u(%(seed)s, 33, id),
                                                 %(region_cum)s::float8[])] AS office_region,
             crm_bulk.u(%(seed)s, 34, id) AS shift_u
      FROM generate_series(1, %(n_operators)s::bigint) AS id) o
JOIN regions r ON r.code = o.office_region
UNION ALL
SELECT e.id,
       crm_bulk.full_name(%(seed)s, 41, e.id, crm_bulk.surname(%(seed)s, 40, e.id)),
       'engineer',
       'Сервисный участок ' || e.area,
       NULL,
       b.region_code,
       e.area,
       crm_bulk.any_of(crm_bulk.u(%(seed)s, 42, e.id),
                       ARRAY['fiber', 'copper', 'tv', 'equipment', 'fiber']),
       CASE WHEN crm_bulk.u(%(seed)s, 43, e.id) < 0.8 THEN 'day' ELSE 'evening' END,
       %(as_of)s::timestamptz - crm_bulk.u(%(seed)s, 44, e.id) * interval '3650 days'
FROM (SELECT %(n_operators)s::bigint + i AS id, (%(engineer_areas)s::text[])[i] AS area
      FROM generate_series(1, %(n_engineers)s::bigint) AS i) e
JOIN service_areas sa ON sa.code = e.area
JOIN branches b ON b.code = sa.branch_code;
