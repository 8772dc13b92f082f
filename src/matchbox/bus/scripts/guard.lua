-- The rollback guard, included (by ``--#include guard``) in every script that hands out ids or
-- writes history. See docs/events.md, "Rollbacks".

-- The run id of this server process: a restart, a promoted replica or a restored backup has a
-- new one, and only a leader that checked the data against its witnesses certifies it.
local function run_id()
    return string.match(redis.call("INFO", "server"), "run_id:(%x+)")
end

-- An error reply if writing is not safe, else nil: the exchange is halted (the alarm is set), or
-- this server process is not the one a leader certified. ``strict`` also refuses a server that
-- was never certified (a leader certifies before its first commit; a brand-new exchange takes
-- orders before its first leader).
local function refuse(alarm_key, certified_key, strict)
    local alarm = redis.call("GET", alarm_key)
    if alarm then
        return redis.error_reply("ALARM " .. alarm)
    end
    local certified = redis.call("GET", certified_key)
    if (certified or strict) and certified ~= run_id() then
        return redis.error_reply("UNCERTIFIED this Redis restarted or took over and no leader has checked it yet")
    end
    return nil
end
