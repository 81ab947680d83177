-- Contact persons of customers lo..hi: 1 to 3 each (id = customer_id * 3 - 2 + k, so ids are
-- a pure function of the customer; gaps are fine, the identity sequence is moved past them).
-- The first is the customer, the others share the surname (family members).
INSERT INTO contact_persons (id, customer_id, full_name, phone, email, consent_sms,
                             consent_email, is_primary)
SELECT p.id, p.customer_id, p.full_name, p.phone,
       p.email,
       crm_bulk.u(%(seed)s, 25, p.id) < 0.65,
       p.email IS NOT NULL AND crm_bulk.u(%(seed)s, 26, p.id) < 0.45,
       p.k = 0
FROM (SELECT c.id * 3 - 2 + k AS id, c.id AS customer_id, k,
             CASE WHEN k = 0 THEN c.full_name
                  ELSE crm_bulk.full_name(%(seed)s, 20 + 3 * k, c.id,
                                          crm_bulk.surname(%(seed)s, 1, c.id)) END AS full_name,
             '+79' || lpad(floor(crm_bulk.u(%(seed)s, 23, c.id * 3 + k) * 1e9)::bigint::text,
                           9, '0') AS phone,
             CASE WHEN crm_bulk.u(%(seed)s, 24, c.id * 3 + k) < 0.7
                  THEN 'client' || (c.id * 3 - 2 + k) || '@'
                       || crm_bulk.any_of(crm_bulk.u(%(seed)s, 27, c.id * 3 + k),
                                          ARRAY['mail.ru', 'yandex.ru', 'gmail.com', 'bk.ru',
                                                'list.ru', 'rambler.ru', 'inbox.ru'])
             END AS email
      FROM customers c
      CROSS JOIN LATERAL generate_series(
          0, (crm_bulk.u(%(seed)s, 21, c.id) < 0.4)::int
             + (crm_bulk.u(%(seed)s, 22, c.id) < 0.12)::int) AS k
      WHERE c.id BETWEEN %(lo)s AND %(hi)s) p;
