-- Remove the consumers of a group that have nothing pending and have not been seen for long:
-- consumers that died, once their entries were reclaimed. Checked and removed in one step, so a
-- consumer that reads an entry meanwhile is never removed with it pending.
-- KEYS[1] the stream; ARGV[1] the group, ARGV[2] the idle time (ms) past which a consumer is
-- gone. Returns the names removed.
local removed = {}
for _, consumer in ipairs(redis.call("XINFO", "CONSUMERS", KEYS[1], ARGV[1])) do
    local fields = {}
    for i = 1, #consumer, 2 do
        fields[consumer[i]] = consumer[i + 1]
    end
    if tonumber(fields["pending"]) == 0 and tonumber(fields["idle"]) > tonumber(ARGV[2]) then
        redis.call("XGROUP", "DELCONSUMER", KEYS[1], ARGV[1], fields["name"])
        removed[#removed + 1] = fields["name"]
    end
end
return removed
