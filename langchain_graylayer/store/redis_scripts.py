"""The Lua scripts of :class:`~langchain_graylayer.store.redis.RedisStore`.

Each touches one key, or keys that share a hash tag (:mod:`.redis_layout`), so each runs on a
Redis Cluster as on one server.
"""

__all__ = ["EVIDENCE_SCRIPT", "LEASE_SCRIPT", "PIN_SCRIPT", "RELEASE_SCRIPT"]

# First writer wins, in one round trip and on any Redis >= 2.6 (``SET NX GET`` needs 7.0).
# Time is frozen while a script runs, so a key that made NX fail cannot expire before the GET.
PIN_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return ARGV[1] end
return redis.call('GET', KEYS[1])
"""

# Take a free or lapsed lease, or renew our own; never touch another holder's live lease.
LEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# Compare and delete: a holder whose lease lapsed (and was taken over) cannot release it.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# One arm's evidence: apply a batch of per-user counter deltas and keep the arm's totals exact
# (users, users per activity class, Σf, Σf·g, users with f > 0). KEYS[1] totals, KEYS[2] user
# records (one hash tag); ARGV[1] TTL in ms, then per user: unit key, activity class, n, and n
# (field, delta) pairs. Products are keyed by the two field names in alphabetical order.
EVIDENCE_SCRIPT = """
local totals, records = KEYS[1], KEYS[2]
local ttl = tonumber(ARGV[1])
local acc = {}
local function add(field, value) acc[field] = (acc[field] or 0) + value end
local i, last = 2, #ARGV
while i <= last do
  local unit, activity, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local raw = redis.call('HGET', records, unit)
  local record
  if raw then
    record = cjson.decode(raw)
  else
    record = {}
    add('users', 1)
    add('class:' .. activity, 1)
  end
  local deltas, names = {}, {}
  for j = 0, n - 1 do
    local name = ARGV[i + 2 * j]
    deltas[name] = (deltas[name] or 0) + tonumber(ARGV[i + 2 * j + 1])
  end
  i = i + 2 * n
  for name, _ in pairs(record) do names[name] = true end
  for name, _ in pairs(deltas) do names[name] = true end
  local list = {}
  for name, _ in pairs(names) do list[#list + 1] = name end
  table.sort(list)
  for a = 1, #list do
    for b = a, #list do
      local fa, fb = list[a], list[b]
      local da, db = deltas[fa] or 0, deltas[fb] or 0
      if da ~= 0 or db ~= 0 then
        local va, vb = record[fa] or 0, record[fb] or 0
        add('p:' .. fa .. ':' .. fb, va * db + da * vb + da * db)
      end
    end
  end
  for name, delta in pairs(deltas) do
    local old = record[name] or 0
    local new = old + delta
    record[name] = new
    add('s:' .. name, delta)
    if old <= 0 and new > 0 then add('pos:' .. name, 1)
    elseif new <= 0 and old > 0 then add('pos:' .. name, -1) end
  end
  redis.call('HSET', records, unit, cjson.encode(record))
end
for field, value in pairs(acc) do
  if value ~= 0 then redis.call('HINCRBYFLOAT', totals, field, value) end
end
if ttl > 0 then
  redis.call('PEXPIRE', totals, ttl)
  redis.call('PEXPIRE', records, ttl)
end
return 1
"""
