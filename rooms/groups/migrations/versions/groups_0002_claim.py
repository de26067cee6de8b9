"""Group chats: the write path's claim as one server-side function (PostgreSQL only).

Revision ID: groups_0002
Revises: groups_0001
Create Date: 2026-11-23

``livemart_group_claim`` takes a batch's publish locks, lets go of published
batches' locks, and reads what the batch's checks need, in one round trip. The reads
must see everything committed before the locks were taken, so they cannot share one
statement (one snapshot) with the locking; in a VOLATILE function each statement
takes a fresh snapshot. See rooms/groups/writers.py.

Its reads are planned afresh on every call (``plan_cache_mode``). With the plan cached
in the session instead, the benchmark's probes for earlier client_msg_ids went through
the primary key's group prefix rather than the unique client_msg_id index, reading every
message of the group each time: 20 to 28 M index entries over three runs of 20 s, and
PostgreSQL at 1.1 cores; planned per call, 8 k entries and 0.6 cores. (A test with a
populated table gets the right plan either way; the benchmark is the evidence.)
"""

from __future__ import annotations

from alembic import op

revision = "groups_0002"
down_revision = "groups_0001"
branch_labels = None
depends_on = None

CLAIM = """
CREATE OR REPLACE FUNCTION livemart_group_claim(
  ids bigint[], lock_class int, key_mod bigint, release bigint[], pairs json, keys json
) RETURNS TABLE (
  k text, group_id bigint, user_id text, role text, muted_until float8,
  seq bigint, client_msg_id text, muted_all boolean
) LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_custom_plan AS $$
DECLARE
  busy bigint[];
BEGIN
  -- Each requested group's lock is tried once; the busy ones are named ('b').
  busy := ARRAY(
    SELECT t.g FROM unnest(ids) AS t(g)
    WHERE NOT pg_try_advisory_lock(lock_class, (t.g % key_mod)::int)
  );
  RETURN QUERY SELECT 'b', b.g, NULL, NULL, NULL::float8, NULL::bigint, NULL, NULL::boolean
    FROM unnest(busy) AS b(g);
  -- One unlock per entry, after the try-locks: a group in both lists stays held.
  -- A lock that was not held is named ('x').
  RETURN QUERY SELECT 'x', r.g, NULL, NULL, NULL::float8, NULL::bigint, NULL, NULL::boolean
    FROM unnest(release) AS r(g)
    WHERE NOT pg_advisory_unlock(lock_class, (r.g % key_mod)::int);
  -- The reads, each with a snapshot taken now that the locks are held.
  RETURN QUERY SELECT 'g', c.id, NULL, NULL, NULL::float8, c.last_seq, NULL, c.muted_all
    FROM chat_groups c JOIN unnest(ids) AS i(g) ON c.id = i.g
    WHERE c.id <> ALL (busy);
  RETURN QUERY SELECT 'm', m.group_id, m.user_id::text, m.role::text, m.muted_until, NULL::bigint,
      NULL, NULL::boolean
    FROM group_members m JOIN json_to_recordset(pairs) AS p(g bigint, u text)
      ON m.group_id = p.g AND m.user_id = p.u
    WHERE m.group_id <> ALL (busy);
  RETURN QUERY SELECT 'c', m.group_id, m.sender_id::text, NULL, NULL::float8, m.seq,
      m.client_msg_id::text, NULL::boolean
    FROM group_messages m JOIN json_to_recordset(keys) AS q(g bigint, u text, c text)
      ON m.group_id = q.g AND m.client_msg_id = q.c AND m.sender_id = q.u
    WHERE m.group_id <> ALL (busy);
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CLAIM)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION livemart_group_claim(bigint[], int, bigint, bigint[], json, json)")
