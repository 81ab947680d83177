-- Interactions of episodes lo..hi. An episode is a customer's problem: a first contact and,
-- for some episodes, up to three repeat contacts about the same topic, each after a log-normal
-- gap (median about a day, so repeats fall within 24 h, 7 d and 30 d). Interaction id =
-- episode * 4 + k + 1 (k = contact number in the episode): a pure function of the episode, so
-- previous_interaction_id is simply id - 1. Arrivals follow the daily curve in the customer's
-- local time and the weekly curve; handling times are log-normal per channel. Some calls and
-- chats are abandoned in the queue (never answered: status abandoned at abandoned_at); some
-- answered contacts are transferred once or twice to another queue of their channel between the
-- first response and the closing (queue_code is the last queue; operator_id stays the operator
-- of the first queue who answered). Everything after as_of is cut off: contacts not yet made are dropped, lifecycles
-- still running stay open.
INSERT INTO interactions (id, customer_id, channel_code, region_code, topic_code, queue_code,
                          direction, status, operator_id, subject, created_at,
                          first_response_at, closed_at, resolved_on_first_contact, updated_at,
                          previous_interaction_id, reopen_count, sla_due_at, abandoned_at,
                          transfer_count)
WITH episode AS (
    SELECT e,
           1 + floor(crm_bulk.u(%(seed)s, 101, e) * %(n_customers)s)::bigint AS customer_id,
           crm_bulk.pick(crm_bulk.u(%(seed)s, 102, e), %(day_cum)s::float8[]) - 1 AS day_i,
           crm_bulk.pick(crm_bulk.u(%(seed)s, 103, e), %(hour_cum)s::float8[]) - 1
               + crm_bulk.u(%(seed)s, 104, e) AS local_hour,
           crm_bulk.pick(crm_bulk.u(%(seed)s, 105, e), %(topic_cum)s::float8[]) AS topic_i,
           crm_bulk.pick(crm_bulk.u(%(seed)s, 106, e), %(contacts_cum)s::float8[]) AS n_contacts,
           crm_bulk.lognormal(%(seed)s, 107, e, %(repeat_gap_s)s, 1.3) AS g1,
           crm_bulk.lognormal(%(seed)s, 108, e, %(repeat_gap_s)s, 1.3) AS g2,
           crm_bulk.lognormal(%(seed)s, 109, e, %(repeat_gap_s)s, 1.3) AS g3
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS e
), contact AS (
    SELECT ep.e * 4 + k + 1 AS id, k, ep.n_contacts, ep.topic_i, c.id AS customer_id,
           c.region_code,
           crm_bulk.pick(crm_bulk.u(%(seed)s, 110, ep.e * 4 + k), %(channel_cum)s::float8[])
               AS channel_i,
           %(start)s::timestamptz
               + (ep.day_i * 24 + ep.local_hour - r.utc_offset) * interval '1 hour'
               + (CASE k WHEN 0 THEN 0 WHEN 1 THEN g1 WHEN 2 THEN g1 + g2 ELSE g1 + g2 + g3 END)
                 * interval '1 second' AS created_at,
           -- when the next contact of the episode happens (if any): decides first-contact
           -- resolution as far as the CRM can know it at as_of
           CASE WHEN k + 1 < ep.n_contacts THEN
               %(start)s::timestamptz
                   + (ep.day_i * 24 + ep.local_hour - r.utc_offset) * interval '1 hour'
                   + (CASE k WHEN 0 THEN g1 WHEN 1 THEN g1 + g2 ELSE g1 + g2 + g3 END)
                     * interval '1 second' END AS next_contact_at
    FROM episode ep
    JOIN customers c ON c.id = ep.customer_id
    JOIN regions r ON r.code = c.region_code
    CROSS JOIN LATERAL generate_series(0, ep.n_contacts - 1) AS k
), timed AS (
    -- An abandoned contact is never assigned, answered or closed: those times are 'infinity',
    -- after any as_of. Transfers fall between the first response and the first closing.
    SELECT t.*,
           CASE WHEN t.abandons THEN 'infinity'::timestamptz
                ELSE t.created_at + 0.4 * t.fr_s * interval '1 second' END AS assigned_at,
           CASE WHEN t.abandons THEN 'infinity'::timestamptz
                ELSE t.created_at + t.fr_s * interval '1 second' END AS first_response_at,
           CASE WHEN t.abandons THEN 'infinity'::timestamptz
                ELSE t.created_at + (t.fr_s + t.handle_s) * interval '1 second' END AS first_close_at,
           CASE WHEN t.abandons THEN t.created_at + t.abandon_s * interval '1 second' END
               AS abandoned_at,
           -- each transfer at most half of what remains until the closing
           CASE WHEN NOT t.abandons AND t.transfers >= 1
                THEN t.created_at + (t.fr_s + least(t.transfer1_draw_s, t.handle_s / 2))
                                    * interval '1 second' END AS transfer1_at,
           CASE WHEN NOT t.abandons AND t.transfers >= 2
                THEN t.created_at + (t.fr_s + least(t.transfer1_draw_s, t.handle_s / 2)
                                     + least(t.transfer2_draw_s,
                                             (t.handle_s - least(t.transfer1_draw_s, t.handle_s / 2)) / 2))
                                    * interval '1 second' END AS transfer2_at
    FROM (SELECT ct.*,
                 crm_bulk.u(%(seed)s, 140, ct.id) < (%(abandon_share)s::float8[])[ct.channel_i]
                     AS abandons,
                 CASE WHEN crm_bulk.u(%(seed)s, 141, ct.id) < %(short_abandon_share)s
                      THEN %(short_abandon_s)s * (0.1 + 0.9 * crm_bulk.u(%(seed)s, 142, ct.id))
                      ELSE greatest(%(short_abandon_s)s,
                                    crm_bulk.lognormal(%(seed)s, 143, ct.id,
                                                       (%(abandon_median_s)s::float8[])[ct.channel_i],
                                                       %(abandon_sigma)s)) END AS abandon_s,
                 CASE WHEN crm_bulk.u(%(seed)s, 144, ct.id) >= (%(transfer_share)s::float8[])[ct.channel_i]
                      THEN 0
                      WHEN crm_bulk.u(%(seed)s, 145, ct.id) < %(second_transfer_share)s THEN 2
                      ELSE 1 END AS transfers,
                 crm_bulk.lognormal(%(seed)s, 146, ct.id, %(transfer_median_s)s, 0.8)
                     AS transfer1_draw_s,
                 crm_bulk.lognormal(%(seed)s, 147, ct.id, %(transfer_median_s)s, 0.8)
                     AS transfer2_draw_s,
                 crm_bulk.lognormal(%(seed)s, 120, ct.id,
                                    (%(first_response_s)s::float8[])[ct.channel_i], 1.0) AS fr_s,
                 crm_bulk.lognormal(%(seed)s, 121, ct.id,
                                    (%(handle_s)s::float8[])[ct.channel_i], 0.8)
                 + CASE WHEN crm_bulk.u(%(seed)s, 122, ct.id)
                             < (%(escalated_share)s::float8[])[ct.topic_i]
                        THEN crm_bulk.lognormal(%(seed)s, 123, ct.id, 108000, 1.0)
                        ELSE 0 END AS handle_s,
                 crm_bulk.u(%(seed)s, 124, ct.id) < %(reopen_share)s AS reopened,
                 crm_bulk.lognormal(%(seed)s, 125, ct.id, 21600, 1.0) AS reopen_after_s,
                 crm_bulk.lognormal(%(seed)s, 126, ct.id, 72000, 1.0) AS rework_s
          FROM contact ct
          WHERE ct.created_at < %(as_of)s) t
), known AS (
    -- the state at as_of
    SELECT tm.*,
           tm.reopened AND tm.reopen_at <= %(as_of)s AS reopen_seen,
           CASE WHEN tm.reopened AND tm.reopen_at <= %(as_of)s
                THEN tm.reopen_at + tm.rework_s * interval '1 second'
                ELSE tm.first_close_at END AS close_at
    FROM (SELECT timed.*,
                 timed.first_close_at + timed.reopen_after_s * interval '1 second' AS reopen_at
          FROM timed) tm
)
SELECT k.id,
       k.customer_id,
       (%(channels)s::text[])[k.channel_i],
       k.region_code,
       (%(topics)s::text[])[k.topic_i],
       fq.queue_code,
       CASE WHEN k.channel_i = 1 AND crm_bulk.u(%(seed)s, 130, k.id) < 0.08
            THEN 'outbound' ELSE 'inbound' END,
       CASE WHEN k.abandoned_at <= %(as_of)s THEN 'abandoned'
            WHEN k.assigned_at > %(as_of)s THEN 'new'
            WHEN k.first_response_at > %(as_of)s THEN 'assigned'
            WHEN k.close_at > %(as_of)s THEN 'in_progress'
            ELSE 'closed' END,
       CASE WHEN k.assigned_at <= %(as_of)s
            THEN crm_bulk.any_of(crm_bulk.u(%(seed)s, 131, k.id), q.ids) END,
       (%(topic_names)s::text[])[k.topic_i],
       k.created_at,
       CASE WHEN k.first_response_at <= %(as_of)s THEN k.first_response_at END,
       CASE WHEN k.close_at <= %(as_of)s THEN k.close_at END,
       CASE WHEN k.close_at <= %(as_of)s
            THEN NOT k.reopen_seen
                 AND (k.next_contact_at IS NULL OR k.next_contact_at > %(as_of)s) END,
       greatest(k.created_at,
                CASE WHEN k.assigned_at <= %(as_of)s THEN k.assigned_at END,
                CASE WHEN k.first_response_at <= %(as_of)s THEN k.first_response_at END,
                CASE WHEN tr.n >= 1 THEN k.transfer1_at END,
                CASE WHEN tr.n >= 2 THEN k.transfer2_at END,
                CASE WHEN k.reopen_seen THEN k.reopen_at END,
                CASE WHEN k.close_at <= %(as_of)s THEN k.close_at END,
                CASE WHEN k.abandoned_at <= %(as_of)s THEN k.abandoned_at END),
       CASE WHEN k.k > 0 THEN k.id - 1 END,
       k.reopen_seen::int,
       k.created_at + (%(sla_hours)s::float8[])[k.channel_i] * interval '1 hour',
       CASE WHEN k.abandoned_at <= %(as_of)s THEN k.abandoned_at END,
       tr.n
FROM known k
JOIN crm_bulk.queue_operators q
    ON q.queue_code = (%(queue_map)s::text[])[(k.channel_i - 1) * %(n_topics)s + k.topic_i]
-- the queues a transfer goes to: another of the channel's (that has operators), then another
LEFT JOIN crm_bulk.channel_queues cq ON cq.channel_code = (%(channels)s::text[])[k.channel_i]
CROSS JOIN LATERAL (
    SELECT crm_bulk.any_of(crm_bulk.u(%(seed)s, 148, k.id), array_remove(cq.codes, q.queue_code))
               AS target) t1
CROSS JOIN LATERAL (
    SELECT crm_bulk.any_of(crm_bulk.u(%(seed)s, 149, k.id), array_remove(cq.codes, t1.target))
               AS target) t2
-- transfers seen by as_of (none where the channel has a single queue)
CROSS JOIN LATERAL (
    SELECT CASE WHEN t1.target IS NULL THEN 0
                ELSE coalesce((k.transfer1_at <= %(as_of)s)::int, 0)
                     + coalesce((k.transfer2_at <= %(as_of)s)::int, 0) END AS n) tr
CROSS JOIN LATERAL (
    SELECT CASE tr.n WHEN 0 THEN q.queue_code WHEN 1 THEN t1.target ELSE t2.target END
               AS queue_code) fq;
