-- Customers lo..hi: region weighted by population, a branch of that region, tariff, status.
-- Registration dates lean towards recent years and end before the history window, so that no
-- interaction predates its customer.
INSERT INTO customers (id, full_name, region_code, segment, registered_at, branch_code,
                       tariff_code, status)
SELECT g.id,
       crm_bulk.full_name(%(seed)s, 2, g.id, crm_bulk.surname(%(seed)s, 1, g.id)),
       g.region,
       'B2C',
       %(registered_until)s::timestamptz
           - (1.0 - sqrt(crm_bulk.u(%(seed)s, 5, g.id))) * interval '5000 days',
       crm_bulk.any_of(crm_bulk.u(%(seed)s, 6, g.id), b.codes),
       (%(tariffs)s::text[])[crm_bulk.pick(crm_bulk.u(%(seed)s, 7, g.id), %(tariff_cum)s::float8[])],
       CASE WHEN g.status_u < 0.03 THEN 'closed'
            WHEN g.status_u < 0.07 THEN 'suspended'
            ELSE 'active' END
FROM (SELECT id,
             (%(regions)s::text[])[crm_bulk.pick(crm_bulk.u(%(seed)s, 4, id),
                                                 %(region_cum)s::float8[])] AS region,
             crm_bulk.u(%(seed)s, 8, id) AS status_u
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS id) g
JOIN crm_bulk.region_branches b ON b.region_code = g.region;
