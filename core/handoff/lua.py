"""Lua scripts for the handoff state machine: each transition checks and changes state atomically.

Return codes: 1 done, -1 not in the expected state, -2 the agent is at capacity, -3 not the holder.
"""

# KEYS: state, queue, log | ARGV: cid, reason, now, priority, team, score
REQUEST = """
local mode = redis.call('HGET', KEYS[1], 'mode')
if mode == 'queued' or mode == 'agent' then
  local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
  return rank and rank + 1 or 0
end
redis.call('HSET', KEYS[1], 'mode', 'queued', 'reason', ARGV[2], 'requested_at', ARGV[3],
  'priority', ARGV[4], 'team', ARGV[5], 'queue_score', ARGV[6])
redis.call('HDEL', KEYS[1], 'agent', 'claimed_at', 'first_reply_at', 'timeout_notified', 'back_at',
  'left_message')
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100000, '*', 'type', 'requested', 'cid', ARGV[1],
  'reason', ARGV[2], 'ts', ARGV[3])
return redis.call('ZRANK', KEYS[2], ARGV[1]) + 1
"""

# KEYS: state, queue, agent_convs, log | ARGV: cid, agent, now, max_concurrent
CLAIM = """
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return -1 end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[4]) then return -2 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'mode', 'agent', 'agent', ARGV[2], 'claimed_at', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
local requested = tonumber(redis.call('HGET', KEYS[1], 'requested_at') or ARGV[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'type', 'claimed', 'cid', ARGV[1],
  'agent', ARGV[2], 'wait_s', tostring(tonumber(ARGV[3]) - requested), 'ts', ARGV[3])
return 1
"""

# KEYS: state, queue, agent_convs | ARGV: cid, agent
RELEASE = """
if redis.call('HGET', KEYS[1], 'mode') ~= 'agent' then return -1 end
if redis.call('HGET', KEYS[1], 'agent') ~= ARGV[2] then return -3 end
redis.call('HSET', KEYS[1], 'mode', 'queued')
redis.call('HDEL', KEYS[1], 'agent', 'claimed_at')
redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'queue_score'), ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""

# KEYS: state, from_convs, to_convs | ARGV: cid, agent, to_agent, to_max
TRANSFER = """
if redis.call('HGET', KEYS[1], 'mode') ~= 'agent' then return -1 end
if redis.call('HGET', KEYS[1], 'agent') ~= ARGV[2] then return -3 end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[4]) then return -2 end
redis.call('HSET', KEYS[1], 'agent', ARGV[3])
redis.call('SMOVE', KEYS[2], KEYS[3], ARGV[1])
return 1
"""

# KEYS: state, queue, agent_convs, log | ARGV: cid, agent, now, note
# The holder resolves; a queued conversation (e.g. a message left for agents) any agent may close.
RESOLVE = """
local mode = redis.call('HGET', KEYS[1], 'mode')
local queued = redis.call('ZSCORE', KEYS[2], ARGV[1])
if mode == 'agent' then
  if redis.call('HGET', KEYS[1], 'agent') ~= ARGV[2] then return -3 end
elseif not queued then
  return -1
end
local requested = tonumber(redis.call('HGET', KEYS[1], 'requested_at') or ARGV[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'type', 'resolved', 'cid', ARGV[1],
  'agent', ARGV[2], 'resolution_s', tostring(tonumber(ARGV[3]) - requested), 'ts', ARGV[3],
  'note', ARGV[4])
redis.call('HSET', KEYS[1], 'mode', 'bot', 'resolved_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'agent', 'claimed_at', 'first_reply_at', 'reason', 'requested_at',
  'priority', 'team', 'queue_score', 'timeout_notified', 'low_conf_streak', 'frustration', 'back_at',
  'left_message')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""
