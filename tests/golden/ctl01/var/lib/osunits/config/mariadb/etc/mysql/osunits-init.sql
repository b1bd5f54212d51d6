-- Rendered by osunits for ctl01: databases and users of the OpenStack services,
-- run by mariadbd at every start (--init-file), so every statement is idempotent, and a
-- password changed in the secrets directory reaches the database at the next restart.


CREATE USER IF NOT EXISTS 'keystone'@'%' IDENTIFIED BY 'example-keystone-db-value';
ALTER USER 'keystone'@'%' IDENTIFIED BY 'example-keystone-db-value';

CREATE USER IF NOT EXISTS 'glance'@'%' IDENTIFIED BY 'example-glance-db-value';
ALTER USER 'glance'@'%' IDENTIFIED BY 'example-glance-db-value';

CREATE USER IF NOT EXISTS 'placement'@'%' IDENTIFIED BY 'example-placement-db-value';
ALTER USER 'placement'@'%' IDENTIFIED BY 'example-placement-db-value';

CREATE USER IF NOT EXISTS 'nova'@'%' IDENTIFIED BY 'example-nova-db-value';
ALTER USER 'nova'@'%' IDENTIFIED BY 'example-nova-db-value';

CREATE USER IF NOT EXISTS 'neutron'@'%' IDENTIFIED BY 'example-neutron-db-value';
ALTER USER 'neutron'@'%' IDENTIFIED BY 'example-neutron-db-value';


CREATE DATABASE IF NOT EXISTS keystone;
GRANT ALL PRIVILEGES ON keystone.* TO 'keystone'@'%';

CREATE DATABASE IF NOT EXISTS glance;
GRANT ALL PRIVILEGES ON glance.* TO 'glance'@'%';

CREATE DATABASE IF NOT EXISTS placement;
GRANT ALL PRIVILEGES ON placement.* TO 'placement'@'%';

CREATE DATABASE IF NOT EXISTS nova_api;
GRANT ALL PRIVILEGES ON nova_api.* TO 'nova'@'%';

CREATE DATABASE IF NOT EXISTS nova;
GRANT ALL PRIVILEGES ON nova.* TO 'nova'@'%';

CREATE DATABASE IF NOT EXISTS nova_cell0;
GRANT ALL PRIVILEGES ON nova_cell0.* TO 'nova'@'%';

CREATE DATABASE IF NOT EXISTS neutron;
GRANT ALL PRIVILEGES ON neutron.* TO 'neutron'@'%';

