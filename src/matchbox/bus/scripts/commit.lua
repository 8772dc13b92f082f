-- Commit one batch of the engine's output, atomically, or nothing at all.
--
-- KEYS[1]      the fencing epoch
-- KEYS[2]      the committed offset (hash)
-- KEYS[3]      the output stream
-- KEYS[4]      the rollback alarm, KEYS[5] the certified run id
-- ARGV[1]      the committing leader's epoch
-- ARGV[2]      the offset this batch follows ("" for the first batch ever)
-- ARGV[3]      the new offset: id of the last input entry applied
-- ARGV[4]      input entries applied in all, ARGV[5] events emitted in all
-- ARGV[6]      the engine's state hash, ARGV[7] the input id it was taken at (the batch's last,
--              or an earlier one: hashing the whole state is throttled under load)
-- ARGV[8]      the events, one line each: "<stream id> <event JSON>\n" (one argument rather
--              than two per event is far cheaper to send and to parse; compact JSON holds no
--              raw newline, so a line is an event)
-- ARGV[9]      "<read ns>,<matched ns>": when the leader read the batch's entries and when it had
--              matched them (its monotonic clock), written on the batch's first event as field "t"
--              ("" or absent: none)
--
-- Every check happens before the first write, so a refused commit writes nothing: a fenced
-- leader (another won a later epoch) gets FENCED, a leader whose idea of the offset is stale
-- gets STALE, and a server no leader has certified since it restarted (or one halted by the
-- rollback alarm) gets UNCERTIFIED (or ALARM): the leader steps down and a new term checks the
-- data against every witness before writing again. Event stream ids are derived from the input
-- ids (see docs/events.md), so even a second emission that got past these checks would be
-- refused by XADD itself.
--#include guard
local epoch = redis.call("GET", KEYS[1])
if epoch ~= ARGV[1] then
    return redis.error_reply("FENCED epoch is " .. tostring(epoch) .. ", committer has " .. ARGV[1])
end
local refused = refuse(KEYS[4], KEYS[5], true)
if refused then
    return refused
end
local committed = redis.call("HGET", KEYS[2], "id") or ""
if committed ~= ARGV[2] then
    return redis.error_reply("STALE committed offset is '" .. committed .. "', batch follows '" .. ARGV[2] .. "'")
end
local last_event = redis.call("HGET", KEYS[2], "last_event") or ""
local count = 0
local blob = ARGV[8]
local find, sub = string.find, string.sub
local pos = 1
local stages = ARGV[9] or ""
while true do
    local space = find(blob, " ", pos, true)  -- plain finds: no pattern matching per character
    if not space then break end
    local newline = find(blob, "\n", space, true)
    last_event = sub(blob, pos, space - 1)
    if count == 0 and stages ~= "" then
        redis.call("XADD", KEYS[3], last_event, "event", sub(blob, space + 1, newline - 1), "t", stages)
    else
        redis.call("XADD", KEYS[3], last_event, "event", sub(blob, space + 1, newline - 1))
    end
    count = count + 1
    pos = newline + 1
end
redis.call("HSET", KEYS[2], "id", ARGV[3], "inputs", ARGV[4], "events", ARGV[5], "hash", ARGV[6],
    "epoch", ARGV[1], "last_event", last_event, "hash_at", ARGV[7])
return count
