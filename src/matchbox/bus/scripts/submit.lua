-- Append commands to the input journal, in one round trip.
--
-- KEYS[1]      the input stream
-- KEYS[2]      the order id counter
-- KEYS[3]      the rollback alarm, KEYS[4] the certified run id, KEYS[5] the committed offset
-- KEYS[6]      the journal version the shard's engine leader recorded (absent: 1)
-- KEYS[7..]    client order id keys, one per command that carries a client order id
-- ARGV[1]      how many commands
-- ARGV[2]      how long a client order id is remembered, in ms
-- ARGV[3]      the highest event number the caller has seen (0 for none): a witness
-- ARGV[4]      ids per millisecond (engine.types.IDS_PER_MS)
-- ARGV[5]      the journal version the commands need (matchbox.bus.codec.needs_version)
-- then, per command, four arguments:
--   new order?  "1" allocates an order id and stores it in the entry's "oid" field
--   cid key     index into KEYS of its client order id key, "0" for none
--   digest      digest of the command's content, to tell a retry from a conflicting reuse
--   payload     the command's JSON
--
-- Returns, per command, {status, order id, entry id}: status "new" (appended now), "dup" (the
-- same client order id with the same content was appended before: nothing appended, the first
-- submission's order id and entry id returned, and the client order id remembered 24 h more) or "conflict" (the same client order id with
-- different content: nothing appended).
--
-- Refuses everything (an error, nothing written) when the caller has seen more events than the
-- committed offset holds (Redis went back in time under it: that sets the alarm), while the
-- alarm is set, on a server no leader has certified since it last restarted, and when the
-- commands need a newer journal version than the engine leader recorded (OLDENGINE).
--
-- An order id is the counter's next value, but never below the server's time in ms x ARGV[4]:
-- ids handed out and then lost with a rollback (an everysec loss nobody else saw) are never
-- handed out again, as long as the clock does not go back and no millisecond takes more orders.
--#include guard
local seen = tonumber(ARGV[3])
local committed = tonumber(redis.call("HGET", KEYS[5], "events") or "0")
if seen > committed then
    local why = string.format("an API instance saw event %d but Redis holds %d committed events", seen, committed)
    redis.call("SET", KEYS[3], why, "NX")
    return redis.error_reply("ALARM " .. redis.call("GET", KEYS[3]))
end
local refused = refuse(KEYS[3], KEYS[4], false)
if refused then
    return refused
end
local needed = tonumber(ARGV[5])
local led = tonumber(redis.call("GET", KEYS[6]) or "1")
if needed > led then
    return redis.error_reply(string.format(
        "OLDENGINE these commands need journal version %d; this shard's engine leader reads %d: upgrade its engines",
        needed, led))
end
local now = redis.call("TIME")
local per_ms = tonumber(ARGV[4])
local floor = (tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)) * per_ms
local n = tonumber(ARGV[1])
local ttl = ARGV[2]
local results = {}
for i = 0, n - 1 do
    local base = 6 + i * 4
    local new_order = ARGV[base] == "1"
    local cid_index = tonumber(ARGV[base + 1])
    local digest = ARGV[base + 2]
    local payload = ARGV[base + 3]
    local seen_before = false
    if cid_index > 0 then
        local previous = redis.call("GET", KEYS[cid_index])
        if previous then
            local oid, entry, old_digest = string.match(previous, "^(%d+) (%S+) (%S+)$")
            local status = (old_digest == digest) and "dup" or "conflict"
            if status == "dup" then
                -- a write: the WAITAOF / WAIT after this script then wait for the server's log up
                -- to here, which holds the first submission, however its own wait ended
                redis.call("PEXPIRE", KEYS[cid_index], ttl)
            end
            results[#results + 1] = {status, tonumber(oid), entry}
            seen_before = true
        end
    end
    if not seen_before then
        local oid = 0
        local entry
        if new_order then
            oid = redis.call("INCR", KEYS[2])
            if oid < floor then
                oid = redis.call("INCRBY", KEYS[2], floor - oid)
            end
            entry = redis.call("XADD", KEYS[1], "*", "c", payload, "oid", oid)
        else
            entry = redis.call("XADD", KEYS[1], "*", "c", payload)
        end
        if cid_index > 0 then
            -- %d: Lua's own number-to-string would write a large id in exponent form
            redis.call("SET", KEYS[cid_index], string.format("%d %s %s", oid, entry, digest), "PX", ttl)
        end
        results[#results + 1] = {"new", oid, entry}
    end
end
return results
