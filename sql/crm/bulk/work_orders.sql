-- Work orders for technical interactions lo..hi (by interaction id) that reached a first
-- response: a share per topic (escalation to field service), id = interaction id (at most one
-- per interaction, so the id is a pure function of it). The engineer works in the customer's
-- service area if it has one, else in the region, else anywhere. Lifecycle: created ->
-- assigned -> (postponed) -> done, or cancelled; what is after as_of is not yet known.
INSERT INTO work_orders (id, interaction_id, customer_id, type, priority, service_area_code,
                         engineer_id, status, sla_due_at, created_at, assigned_at, completed_at,
                         cancelled_at, reassign_count, postpone_count, updated_at)
SELECT w.id, w.id, w.customer_id, w.type, w.priority, w.area,
       CASE WHEN w.assigned_seen THEN w.engineer_id END,
       CASE WHEN w.cancel_seen THEN 'cancelled'
            WHEN w.done_seen THEN 'done'
            WHEN NOT w.assigned_seen THEN 'new'
            WHEN w.postpone_count > 0 THEN 'postponed'
            WHEN w.assigned_at + (w.completed_at - w.assigned_at) / 2 <= %(as_of)s THEN 'in_progress'
            ELSE 'assigned' END,
       w.created_at + (ARRAY[8, 24, 48, 72])[w.priority] * interval '1 hour',
       w.created_at,
       CASE WHEN w.assigned_seen THEN w.assigned_at END,
       CASE WHEN w.done_seen THEN w.completed_at END,
       CASE WHEN w.cancel_seen THEN w.cancelled_at END,
       CASE WHEN w.assigned_seen THEN w.reassign_count ELSE 0 END,
       w.postpone_count,
       greatest(w.created_at,
                CASE WHEN w.assigned_seen THEN w.assigned_at END,
                CASE WHEN w.done_seen THEN w.completed_at END,
                CASE WHEN w.cancel_seen THEN w.cancelled_at END)
FROM (SELECT v.*,
             v.assigned_at <= %(as_of)s AND (NOT v.cancelled OR v.assigned_at <= v.cancelled_at)
                 AS assigned_seen,
             v.cancelled AND v.cancelled_at <= %(as_of)s AS cancel_seen,
             NOT v.cancelled AND v.completed_at <= %(as_of)s AS done_seen
      FROM (SELECT o.*,
                   o.assigned_at
                       + (crm_bulk.lognormal(%(seed)s, 206, o.id, 64800, 0.9)
                          + o.postpone_count * crm_bulk.lognormal(%(seed)s, 207, o.id, 86400, 0.7))
                         * interval '1 second' AS completed_at,
                   o.created_at + crm_bulk.lognormal(%(seed)s, 208, o.id, 43200, 1.0)
                       * interval '1 second' AS cancelled_at
            FROM (SELECT i.id, i.customer_id,
                         CASE split_part(i.topic_code, '.', 1)
                              WHEN 'moving' THEN 'installation'
                              WHEN 'equipment' THEN 'equipment_replacement'
                              ELSE CASE WHEN crm_bulk.u(%(seed)s, 201, i.id) < 0.7
                                        THEN 'repair' ELSE 'line_check' END END AS type,
                         crm_bulk.pick(crm_bulk.u(%(seed)s, 202, i.id),
                                       ARRAY[0.1, 0.4, 0.85]) AS priority,
                         crm_bulk.any_of(crm_bulk.u(%(seed)s, 203, i.id), b0.codes) AS area,
                         i.first_response_at
                             + crm_bulk.lognormal(%(seed)s, 204, i.id, 300, 0.8)
                               * interval '1 second' AS created_at,
                         i.first_response_at
                             + (crm_bulk.lognormal(%(seed)s, 204, i.id, 300, 0.8)
                                + crm_bulk.lognormal(%(seed)s, 205, i.id, 5400, 1.0))
                               * interval '1 second' AS assigned_at,
                         crm_bulk.u(%(seed)s, 209, i.id) < 0.06 AS cancelled,
                         crm_bulk.pick(crm_bulk.u(%(seed)s, 210, i.id), ARRAY[0.85, 0.97]) - 1
                             AS reassign_count,
                         crm_bulk.pick(crm_bulk.u(%(seed)s, 211, i.id), ARRAY[0.85, 0.96]) - 1
                             AS postpone_count,
                         coalesce(crm_bulk.any_of(crm_bulk.u(%(seed)s, 212, i.id), ae.ids),
                                  crm_bulk.any_of(crm_bulk.u(%(seed)s, 212, i.id), re.ids),
                                  crm_bulk.any_of(crm_bulk.u(%(seed)s, 212, i.id), al.ids))
                             AS engineer_id
                  FROM interactions i
                  JOIN customers c ON c.id = i.customer_id
                  JOIN crm_bulk.branch_areas b0 ON b0.branch_code = c.branch_code
                  LEFT JOIN crm_bulk.area_engineers ae
                      ON ae.service_area_code
                         = crm_bulk.any_of(crm_bulk.u(%(seed)s, 203, i.id), b0.codes)
                  LEFT JOIN crm_bulk.region_engineers re ON re.region_code = c.region_code
                  CROSS JOIN crm_bulk.all_engineers al
                  WHERE i.id BETWEEN %(lo)s AND %(hi)s
                    AND i.first_response_at IS NOT NULL
                    AND crm_bulk.u(%(seed)s, 200, i.id)
                        < CASE split_part(i.topic_code, '.', 1)
                              WHEN 'internet' THEN 0.3 WHEN 'tv' THEN 0.25
                              WHEN 'equipment' THEN 0.35 WHEN 'moving' THEN 0.6
                              ELSE 0 END) o
            WHERE o.created_at <= %(as_of)s) v) w;
