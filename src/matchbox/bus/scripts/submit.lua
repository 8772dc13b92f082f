-- Append commands to the input journal, in one round trip.
--
-- KEYS[1]      the input stream
-- KEYS[2]      the order id counter
-- KEYS[3..]    client order id keys, one per command that carries a client order id
-- ARGV[1]      how many commands
-- ARGV[2]      how long a client order id is remembered, in ms
-- then, per command, four arguments:
--   new order?  "1" allocates an order id (INCR) and stores it in the entry's "oid" field
--   cid key     index into KEYS of its client order id key, "0" for none
--   digest      digest of the command's content, to tell a retry from a conflicting reuse
--   payload     the command's JSON
--
-- Returns, per command, {status, order id, entry id}: status "new" (appended now), "dup" (the
-- same client order id with the same content was appended before: nothing appended, the first
-- submission's order id and entry id returned) or "conflict" (the same client order id with
-- different content: nothing appended).
local n = tonumber(ARGV[1])
local ttl = ARGV[2]
local results = {}
for i = 0, n - 1 do
    local base = 3 + i * 4
    local new_order = ARGV[base] == "1"
    local cid_index = tonumber(ARGV[base + 1])
    local digest = ARGV[base + 2]
    local payload = ARGV[base + 3]
    local seen = false
    if cid_index > 0 then
        local previous = redis.call("GET", KEYS[cid_index])
        if previous then
            local oid, entry, old_digest = string.match(previous, "^(%d+) (%S+) (%S+)$")
            local status = (old_digest == digest) and "dup" or "conflict"
            results[#results + 1] = {status, tonumber(oid), entry}
            seen = true
        end
    end
    if not seen then
        local oid = 0
        local entry
        if new_order then
            oid = redis.call("INCR", KEYS[2])
            entry = redis.call("XADD", KEYS[1], "*", "c", payload, "oid", oid)
        else
            entry = redis.call("XADD", KEYS[1], "*", "c", payload)
        end
        if cid_index > 0 then
            redis.call("SET", KEYS[cid_index], oid .. " " .. entry .. " " .. digest, "PX", ttl)
        end
        results[#results + 1] = {"new", oid, entry}
    end
end
return results
