--- Doc-only (config.ld reads it; nothing runs it): the Lock the C core
-- implements (csrc/lock.c), merged into devmapper.kernel.
-- @module devmapper.kernel

--- An flock(2) lock between processes, from @{lock}; released on
-- `l:close()`, on `<close>` and when collected.
-- @type Lock

--- Release the lock (closing again does nothing).
-- @function Lock:close
