--- Doc-only (config.ld reads it; nothing runs it): the Key methods the C
-- core implements (csrc/secure.c), merged into devmapper.key.
-- @module devmapper.key

--- A key in locked memory (devmapper.Key), from @{random}, @{from_hex},
-- @{derive}, @{plain}, @{prompt} or @{read}. `tostring(k)` shows only its
-- size and origin, `#k` is its size in bytes, `a == b` compares two keys
-- in constant time. It is wiped on `k:close()`, on `<close>` and when
-- collected.
-- @type Key

--- Wipe and free the bytes; the Key is closed (using it then raises).
-- Closing again does nothing.
-- @function Key:close

--- The key's bytes in hex: the one explicit export.
-- @treturn string lower-case hex
-- @usage print(k:hex())
-- @function Key:hex
