-- Claims from interactions lo..hi (by interaction id) that reached a first response: a small
-- share per topic, id = interaction id. Registered some days after the contact; resolved or
-- rejected after a log-normal review (median 12 days) against the 60-day regulatory deadline
-- (Federal Law "On Communications", art. 55), a few late ones included.
INSERT INTO claims (id, customer_id, interaction_id, category, amount_claimed,
                    regulatory_due_at, status, outcome, created_at, resolved_at, updated_at)
SELECT x.id, x.customer_id, x.id, x.category,
       CASE WHEN x.category <> 'staff_conduct'
            THEN round((crm_bulk.lognormal(%(seed)s, 305, x.id, 700, 1.0))::numeric, 2) END,
       x.created_at + interval '60 days',
       CASE WHEN x.resolved_at <= %(as_of)s
                THEN CASE WHEN x.rejected THEN 'rejected' ELSE 'resolved' END
            WHEN x.created_at + interval '1 day' <= %(as_of)s THEN 'in_review'
            ELSE 'registered' END,
       CASE WHEN x.resolved_at <= %(as_of)s
                THEN CASE WHEN x.rejected THEN 'no_grounds'
                          ELSE crm_bulk.any_of(crm_bulk.u(%(seed)s, 306, x.id),
                                               ARRAY['compensation', 'recalculation',
                                                     'explanation']) END END,
       x.created_at,
       CASE WHEN x.resolved_at <= %(as_of)s THEN x.resolved_at END,
       CASE WHEN x.resolved_at <= %(as_of)s THEN x.resolved_at
            WHEN x.created_at + interval '1 day' <= %(as_of)s THEN x.created_at + interval '1 day'
            ELSE x.created_at END
FROM (SELECT c.*,
             c.created_at + crm_bulk.lognormal(%(seed)s, 303, c.id, 1036800, 0.6)
                 * interval '1 second' AS resolved_at,
             crm_bulk.u(%(seed)s, 304, c.id) < 0.3 AS rejected
      FROM (SELECT i.id, i.customer_id,
                   CASE split_part(i.topic_code, '.', 1)
                        WHEN 'billing' THEN 'billing_error'
                        WHEN 'equipment' THEN 'equipment'
                        WHEN 'other' THEN 'staff_conduct'
                        ELSE CASE WHEN crm_bulk.u(%(seed)s, 301, i.id) < 0.5
                                  THEN 'outage_compensation' ELSE 'service_quality' END
                   END AS category,
                   coalesce(i.closed_at, i.first_response_at)
                       + crm_bulk.lognormal(%(seed)s, 302, i.id, 172800, 1.0)
                         * interval '1 second' AS created_at
            FROM interactions i
            WHERE i.id BETWEEN %(lo)s AND %(hi)s
              AND i.first_response_at IS NOT NULL
              AND crm_bulk.u(%(seed)s, 300, i.id)
                  < CASE split_part(i.topic_code, '.', 1)
                        WHEN 'billing' THEN 0.03 WHEN 'other' THEN 0.04
                        WHEN 'internet' THEN 0.015 WHEN 'moving' THEN 0.005
                        ELSE 0.01 END) c
      WHERE c.created_at <= %(as_of)s) x;
