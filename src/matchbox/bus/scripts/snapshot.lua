-- Store an engine snapshot taken right after a commit, and trim the journal behind the oldest
-- snapshot still kept. The leader stores it from a thread while it goes on matching, so the
-- committed offset may have moved past the snapshot's; under the same epoch it was committed on
-- the way there (one leader commits in order), and a snapshot ahead of it is refused.
--
-- KEYS[1] the fencing epoch, KEYS[2] the committed offset (hash), KEYS[3] the snapshot stream,
-- KEYS[4] the input stream
-- ARGV[1] epoch, ARGV[2] the input id the snapshot reflects, ARGV[3] input entries applied,
-- ARGV[4] events emitted, ARGV[5] state hash, ARGV[6] the snapshot bytes, ARGV[7] snapshots to
-- keep, ARGV[8] "1" to trim the input stream behind the oldest kept snapshot
local epoch = redis.call("GET", KEYS[1])
if epoch ~= ARGV[1] then
    return redis.error_reply("FENCED epoch is " .. tostring(epoch) .. ", snapshotter has " .. ARGV[1])
end
if tonumber(redis.call("HGET", KEYS[2], "inputs") or "0") < tonumber(ARGV[3]) then
    return redis.error_reply("STALE a snapshot must reflect a committed offset")
end
redis.call("XADD", KEYS[3], "MAXLEN", ARGV[7], "*", "in", ARGV[2], "inputs", ARGV[3], "events", ARGV[4],
    "hash", ARGV[5], "data", ARGV[6])
local trimmed = 0
if ARGV[8] == "1" then
    local oldest = redis.call("XRANGE", KEYS[3], "-", "+", "COUNT", 1)[1]
    local fields = oldest[2]
    for i = 1, #fields, 2 do
        if fields[i] == "in" then
            trimmed = redis.call("XTRIM", KEYS[4], "MINID", fields[i + 1])
        end
    end
end
return trimmed
