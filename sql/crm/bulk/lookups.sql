-- Small lookup tables the chunked statements join to: which branches a region has, which
-- service areas a branch has, which operators serve a queue, which queues of a channel a
-- transfer can go to, which engineers work in an area or a region. Arrays ordered by code/id so that a hash-based pick is deterministic.
DROP TABLE IF EXISTS crm_bulk.region_branches, crm_bulk.branch_areas, crm_bulk.queue_operators,
                     crm_bulk.area_engineers, crm_bulk.region_engineers, crm_bulk.all_engineers,
                     crm_bulk.channel_queues;
CREATE TABLE crm_bulk.region_branches AS
    SELECT region_code, array_agg(code ORDER BY code) AS codes FROM branches GROUP BY region_code;
CREATE TABLE crm_bulk.branch_areas AS
    SELECT branch_code, array_agg(code ORDER BY code) AS codes
    FROM service_areas GROUP BY branch_code;
CREATE TABLE crm_bulk.queue_operators AS
    SELECT q.code AS queue_code, array_agg(e.id ORDER BY e.id) AS ids
    FROM queues q JOIN employees e ON e.role = 'operator' AND e.skill_group = q.skill_group
    GROUP BY q.code;
CREATE TABLE crm_bulk.area_engineers AS
    SELECT service_area_code, array_agg(id ORDER BY id) AS ids
    FROM employees WHERE role = 'engineer' GROUP BY service_area_code;
CREATE TABLE crm_bulk.region_engineers AS
    SELECT region_code, array_agg(id ORDER BY id) AS ids
    FROM employees WHERE role = 'engineer' GROUP BY region_code;
CREATE TABLE crm_bulk.all_engineers AS
    SELECT array_agg(id ORDER BY id) AS ids FROM employees WHERE role = 'engineer';
-- The queues of each channel that have operators: where a transfer can go.
CREATE TABLE crm_bulk.channel_queues AS
    SELECT q.channel_code, array_agg(q.code ORDER BY q.code) AS codes
    FROM queues q JOIN crm_bulk.queue_operators o ON o.queue_code = q.code
    GROUP BY q.channel_code;
