"""The platform broker's Redis scripts: dramatiq's enqueue, ack and nack, each extended to
carry a ledger event in the same call (both or neither).

KEYS of :data:`PLATFORM_LUA`: namespace, ledger stream, ledger runs hash, ledger
finished set (names from :class:`jobcore.keys.Keys`). ARGV 1-4: command, timestamp
(ms), queue name, broker id (every call heartbeats, as dramatiq's own script does).

* ``enqueue`` ARGV 5-9: redis id, payload, wake tokens max, ledger event or "",
  message id. With an event (a new run), a message id the ledger already knows (open,
  or finished within the dedupe window) is not enqueued again: returns 0. Otherwise the
  payload, the id, a wake-up token and the event are written: returns 1.
* ``ack`` ARGV 5-9: redis id, message id, closing event or "", final ("1"/"0"), the
  run's STARTED stream entry or "". dramatiq's ack plus the event; a final one marks the
  run finished, so a later copy is refused when it starts, and deletes the STARTED
  entry if it is still in the stream. The payload is deleted even if maintenance took the id back
  meanwhile (this worker was presumed dead): the run is done.
* ``nack`` ARGV 5-9: as ``ack``, after moving the message to the dead-letter queue.
* ``requeue_dead`` ARGV 5-9: dead redis id, then a new message as for ``enqueue``: the
  dead letter is removed and the new message (a new run linked to the old one) enqueued
  in one step; returns 0 if the dead letter is gone (someone else requeued it).
* ``discard_dead`` ARGV 5: dead redis id; returns 0 if it is gone.
* ``enqueue_many`` ARGV 5-6: wake tokens max, count; then per message: redis id,
  payload, event or "", message id. One chunk of a bulk fan-out; returns how many
  messages were new.
"""

from __future__ import annotations

PLATFORM_LUA = """
local ns, stream, runs, finished = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local command, ts, queue_name, worker_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call("zadd", ns .. ":__heartbeats__", ts, worker_id)
local queue = ns .. ":" .. queue_name
local messages = queue .. ".msgs"

local function known(mid)
  return redis.call("hexists", runs, mid) == 1 or redis.call("zscore", finished, mid)
end

local function close(mid, event, final, started_entry)
  if event ~= "" then redis.call("xadd", stream, "*", "e", event) end
  if final == "1" then
    redis.call("hdel", runs, mid)
    redis.call("zadd", finished, ts, mid)
    -- The run's STARTED entry, if the drainer has not applied it yet: FINISHED says it all.
    if started_entry and started_entry ~= "" then redis.call("xdel", stream, started_entry) end
  end
end

if command == "enqueue" then
  local rid, payload, event, mid = ARGV[5], ARGV[6], ARGV[8], ARGV[9]
  if event ~= "" then
    if known(mid) then return 0 end
    redis.call("xadd", stream, "*", "e", event)
    redis.call("hset", runs, mid, 0)
  end
  redis.call("hset", messages, rid, payload)
  redis.call("rpush", queue, rid)
  redis.call("lpush", queue .. ".wake", 1)
  redis.call("ltrim", queue .. ".wake", 0, tonumber(ARGV[7]) - 1)
  return 1
elseif command == "enqueue_many" then
  local fresh = 0
  for i = 7, #ARGV, 4 do
    local rid, payload, event, mid = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    if event == "" or not known(mid) then
      if event ~= "" then
        redis.call("xadd", stream, "*", "e", event)
        redis.call("hset", runs, mid, 0)
      end
      redis.call("hset", messages, rid, payload)
      redis.call("rpush", queue, rid)
      fresh = fresh + 1
    end
  end
  if fresh > 0 then
    redis.call("lpush", queue .. ".wake", 1)
    redis.call("ltrim", queue .. ".wake", 0, tonumber(ARGV[5]) - 1)
  end
  return fresh
elseif command == "requeue_dead" then
  local xqueue = ns .. ":" .. queue_name .. ".XQ"
  if redis.call("zrem", xqueue, ARGV[5]) == 0 then return 0 end
  redis.call("hdel", xqueue .. ".msgs", ARGV[5])
  local rid, payload, event, mid = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
  if event ~= "" then
    redis.call("xadd", stream, "*", "e", event)
    redis.call("hset", runs, mid, 0)
  end
  redis.call("hset", messages, rid, payload)
  redis.call("rpush", queue, rid)
  redis.call("lpush", queue .. ".wake", 1)
  redis.call("ltrim", queue .. ".wake", 0, 63)
  return 1
elseif command == "discard_dead" then
  local xqueue = ns .. ":" .. queue_name .. ".XQ"
  if redis.call("zrem", xqueue, ARGV[5]) == 0 then return 0 end
  redis.call("hdel", xqueue .. ".msgs", ARGV[5])
  return 1
elseif command == "ack" then
  redis.call("srem", ns .. ":__acks__." .. worker_id .. "." .. queue_name, ARGV[5])
  redis.call("hdel", messages, ARGV[5])
  close(ARGV[6], ARGV[7], ARGV[8], ARGV[9])
  return 1
elseif command == "nack" then
  local canonical = queue_name
  if string.sub(queue_name, -3) == ".DQ" then canonical = string.sub(queue_name, 1, -4) end
  local xqueue = ns .. ":" .. canonical .. ".XQ"
  if redis.call("srem", ns .. ":__acks__." .. worker_id .. "." .. queue_name, ARGV[5]) > 0 then
    local payload = redis.call("hget", messages, ARGV[5])
    if payload then
      redis.call("zadd", xqueue, ts, ARGV[5])
      redis.call("hset", xqueue .. ".msgs", ARGV[5], payload)
      redis.call("hdel", messages, ARGV[5])
    end
  end
  close(ARGV[6], ARGV[7], ARGV[8], ARGV[9])
  return 1
end
return redis.error_reply("unknown platform command " .. command)
"""
