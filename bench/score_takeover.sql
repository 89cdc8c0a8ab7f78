-- The last step of a full recompute on PostgreSQL, on synthetic tables:
-- taking over from the old score table the rows the new one must keep.
-- One upsert of the whole old table (before) against an anti-join insert
-- plus an upsert of the newer rows only (now, `ScoreReplacement::finish`).
--   createdb patron_bench_takeover
--   psql -d patron_bench_takeover -f bench/score_takeover.sql
--   dropdb patron_bench_takeover
\timing on
create table old_s as select md5(i::text) || '-' || i as customer_id, repeat('x', 300)::bytea as score,
  5::bigint as data_seq, 1::bigint as revision from generate_series(1, 1000000) i;
update old_s set data_seq = 9 where customer_id in (select customer_id from old_s limit 1000);
create table next_a as select customer_id, repeat('y', 300)::bytea as score, 7::bigint as data_seq,
  2::bigint as revision from old_s;
alter table next_a add primary key (customer_id);
create table next_b as select * from next_a;
alter table next_b add primary key (customer_id);
checkpoint;
\echo before: one upsert of every old row
insert into next_a select * from old_s on conflict (customer_id) do update
  set score = excluded.score, data_seq = excluded.data_seq, revision = excluded.revision
  where next_a.data_seq < excluded.data_seq;
checkpoint;
\echo now: the rows of customers not scored, then the rows of a later feed position
begin;
set local work_mem = '256MB';
insert into next_b select * from old_s o
  where not exists (select 1 from next_b n where n.customer_id = o.customer_id);
insert into next_b select * from old_s where data_seq > 7 on conflict (customer_id) do update
  set score = excluded.score, data_seq = excluded.data_seq, revision = excluded.revision
  where next_b.data_seq < excluded.data_seq;
commit;
drop table old_s, next_a, next_b;
