-- Certify this server process for the leader that has just checked its data against every
-- witness (see guard.lua): from now on ``submit`` and ``commit`` accept writes on it.
--
-- KEYS[1] the fencing epoch, KEYS[2] the rollback alarm, KEYS[3] the certified run id
-- ARGV[1] the leader's epoch
-- Returns the run id certified. Refuses a fenced leader (FENCED) and a halted exchange (ALARM).
--#include guard
local epoch = redis.call("GET", KEYS[1])
if epoch ~= ARGV[1] then
    return redis.error_reply("FENCED epoch is " .. tostring(epoch) .. ", certifier has " .. ARGV[1])
end
local alarm = redis.call("GET", KEYS[2])
if alarm then
    return redis.error_reply("ALARM " .. alarm)
end
local id = run_id()
redis.call("SET", KEYS[3], id)
return id
