-- levels: how many messages wait at each priority level of a queue (lib/levels.lua), the
-- herald counted with its level. Returns {level, count, ...}, highest level first, levels that
-- hold none left out.
--
-- KEYS[1]  bus:{q}:pending
--#include lib/levels.lua

return depth_by_level(KEYS[1])
