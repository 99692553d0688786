-- Runs once, on the first start of an empty data volume: a database and role per scheduler.
CREATE ROLE airflow LOGIN PASSWORD 'airflow';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE prefect LOGIN PASSWORD 'prefect';
CREATE DATABASE prefect OWNER prefect;
