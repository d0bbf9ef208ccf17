-- A seeded fuzzer over everything that reads user text: table text (through
-- parse, validate and tostring), size strings, cipher specs, options,
-- keyring references, hex keys and status lines. It fails on any error that
-- is not the module's error object, on an input that takes too long (a
-- hang), and on a table whose text does not read back as itself.
-- Usage: dmlua spec/fuzz/run.lua [inputs = 20000] [seed = os.time()]
local dm = require "devmapper"
local size = require "devmapper.size"
local target = require "devmapper.target"

local N = math.tointeger(tonumber(arg and arg[1] or "")) or 20000
local SEED = math.tointeger(tonumber(arg and arg[2] or "")) or os.time()
math.randomseed(SEED)
dm.kernel.warn = function() end

-- Devices the fuzzed tables may name, as facts (no kernel needed).
local facts = {
  ["7:0"] = {path = "/dev/loop0", major = 7, minor = 0, sectors = 4096, logical_block_size = 512},
  ["7:1"] = {path = "/dev/loop1", major = 7, minor = 1, sectors = 4096, logical_block_size = 512},
  ["7:3"] = {path = "/dev/loop3", major = 7, minor = 3, sectors = 4096, logical_block_size = 4096},
}
local function ctx()
  local c = {}
  function c.facts(d)
    local f = type(d) == "string" and facts[d]
    if not f then error(require("devmapper.check").fail("table", nil, "unknown device"), 0) end
    return f
  end
  function c.name(d) return tostring(d) end
  function c.dev(d) return tostring(d) end
  return c
end

local seeds = {
  "0 4096 linear 7:0 0", "0 8192 striped 2 16 7:0 0 7:1 0", "0 100 zero\n100 8 error",
  "0 4096 crypt aes-xts-plain64 :64:logon:devmapper:abc 0 7:0 0",
  "0 4096 crypt aes-cbc-essiv:sha256 " .. ("0f"):rep(32) .. " 0 7:1 0 2 allow_discards sector_size:4096",
  "0 4096 snapshot 7:0 7:1 P 8", "0 4096 snapshot 7:0 7:1 PO 16 2 discard_zeroes_cow discard_passdown_origin",
  "0 4096 snapshot-origin 7:0", "0 4096 snapshot-merge 7:0 7:1 P 8", "0 1024 thin-pool 7:0 7:1 128 0 1 skip_block_zeroing",
  "0 4096 linear 7:3 8", "0 8 crypt capi:cbc(aes)-plain64 :32:logon:devmapper:x 0 7:0 0 1 iv_large_sectors",
  "0 4096 delay 7:0 0 10", "0 4096 delay 7:0 0 10 7:1 0 20 7:1 8 30", "0 4096 flakey 7:0 0 1 1 0",
  "0 4096 flakey 7:0 0 0 5 6 drop_writes corrupt_bio_byte 32 r 1 0", "0 2048 unstriped 2 16 1 7:0 0",
  "0 4096 log-writes 7:0 7:1", "0 4096 era 7:0 7:1 128",
  "0 4096 cache 7:0 7:1 7:2 128 2 metadata2 writethrough smq 2 migration_threshold 2048",
  "0 4096 cache 7:0 7:1 7:2 64 0 mq 2 random_threshold 4",
  "0 4096 writecache s 7:0 7:1 4096 5 high_watermark 60 low_watermark 10 cleaner",
  "0 1024 integrity 7:0 0 4 J 2 block_size:4096 internal_hash:crc32c", "0 1024 integrity 7:0 8 - B 1 internal_hash:sha256",
  "8 27/2048 128 5/64 10 20 3 4 0 5 2 1 writethrough 2 migration_threshold 2048 smq 0 rw -",
  "0 4096 raid raid1 5 0 rebuild 1 region_size 1024 2 7:0 7:1 - 7:3",
  "0 8192 raid raid5_ls 6 64 nosync daemon_sleep 10 stripe_cache 64 3 - 7:0 - 7:1 - 7:3",
  "0 4096 raid raid10 5 64 raid10_copies 2 raid10_format far 2 7:0 7:1 7:3 7:4",
}
local pieces = {" ", "  ", "\t", "\n", "\\", "\\ ", "#", ":", "-", "+", "0", "1", "8", "16", "4096", "0x10", "1e3",
  "8.0", "-1", "18446744073709551616", "9223372036854775807", "9223372036854775808", "4294967296", "999999999999999999999999",
  "7:0", "7:1", "7:3", "7:999", "4096:0", "/dev/loop0", "/nonexistent", "P", "PO", "N", "p", "X", "linear", "striped",
  "zero", "error", "crypt", "snapshot", "snapshot-origin", "snapshot-merge", "aes", "aes-xts-plain64", "aes:2-cbc-lmk",
  "capi:", "essiv:", ":64:logon:devmapper:k", ":x:logon:d", "-", "allow_discards", "sector_size:512", "sector_size:",
  "discard_zeroes_cow", "discard_passdown_origin", ("ab"):rep(16), ("AB"):rep(32), "abc", "\xa0", "\0", "\xff", "%", "%s",
  "(", ")", "[", "]", "'", '"', "<key>", ("9"):rep(40),
  "delay", "flakey", "unstriped", "log-writes", "era", "drop_writes", "error_writes", "corrupt_bio_byte", "r", "w",
  "R", "6", "7", "255", "256",
  "cache", "writecache", "integrity", "smq", "writeback",
  "metadata2", "migration_threshold", "high_watermark", "start_sector", "J", "B", "internal_hash:crc32c", "block_size:",
  "raid", "raid1", "raid5_ls", "raid6_zr", "RAID1", "sync", "nosync", "rebuild", "write_mostly", "region_size",
  "stripe_cache", "journal_dev", "journal_mode", "raid10_format", "far", "delta_disks", "-2"}

local function pick(t) return t[math.random(#t)] end

local function mutate(s)
  local ops = math.random(1, 4)
  for _ = 1, ops do
    local r, i = math.random(5), math.random(0, #s)
    if r == 1 then s = s:sub(1, i) .. pick(pieces) .. s:sub(i + 1)               -- insert a piece
    elseif r == 2 then s = s:sub(1, i) .. s:sub(i + math.random(1, 8))          -- delete a run
    elseif r == 3 then                                                          -- replace a word
      local words = {}
      for w in s:gmatch("%S+") do words[#words + 1] = w end
      if #words > 0 then words[math.random(#words)] = pick(pieces) end
      s = table.concat(words, pick {" ", "  ", "\t"})
    elseif r == 4 then s = s:sub(1, i) .. string.char(math.random(0, 255)) .. s:sub(i + 1)  -- a random byte
    else s = s .. "\n" .. pick(seeds) end                                       -- another line
  end
  return s
end

local function random_text()
  local t = {}
  for i = 1, math.random(1, 12) do t[i] = pick(pieces) end
  return table.concat(t, pick {" ", "", "\t"})
end

-- The module's error object: a table with op, errno and a one-line message.
local function is_error_object(e)
  return type(e) == "table" and type(e.op) == "string" and math.type(e.errno) == "integer"
         and type(e.message) == "string" and not tostring(e):find("\n")
end

local LIMIT = 2e6 -- VM instructions per input: parsing is linear, so far more than enough
local function guarded(f, ...)
  local count = 0
  debug.sethook(function()
    count = count + 1
    if count > LIMIT / 1000 then error("HANG", 0) end
  end, "", 1000)
  local r = table.pack(pcall(f, ...))
  debug.sethook()
  return table.unpack(r, 1, r.n)
end

local findings, current = 0, 0
local function finding(kind, input, detail)
  findings = findings + 1
  io.stderr:write(("FINDING %s (seed %d, input %d): %q: %s\n"):format(kind, SEED, current, input,
                                                                      tostring(detail)))
end

-- f(...) on a fuzzed input (named for the report).
local function check(input, f, ...)
  local ok, err = guarded(f, ...)
  if not ok then
    if err == "HANG" then finding("hang", input, "over the instruction limit")
    elseif not is_error_object(err) then finding("raw error", input, err) end
  end
  return ok, err
end

-- Tables: parse; if it parses, tostring must parse back to the same text,
-- and validating (with known device facts) must end in a value or an error object.
local function table_case(text)
  local ok, t = check(text, dm.table.parse, text)
  if not ok then return end
  local ok2, shown = check(text, tostring, t)
  if not ok2 then return end
  local ok3, again = check(text, dm.table.parse, shown)
  if ok3 then
    local ok4, shown2 = check(text, tostring, again)
    if ok4 and shown2 ~= shown and not shown:find("?", 1, true) then
      finding("round trip", text, ("%q then %q"):format(shown, shown2))
    end
  end
  check(text, function() return t:validate(ctx()) end)
end

local kinds = {
  table_case,
  function(s) check(s, size.sectors, s, "size", true) end,
  function(s) check(s, dm.crypt, {"7:0", cipher = s, key = dm.key.random(32), length = 8}) end,
  function(s) check(s, dm.crypt, {"7:0", key = dm.key.random(64), options = s, length = 8}) end,
  function(s) check(s, dm.table.parse, "0 8 crypt aes-xts-plain64 " .. s .. " 0 7:0 0") end,
  function(s) check(s, dm.flakey, {"7:0", up = 1, down = 1, features = s, length = 8}) end,
  function(s) check(s, dm.table.parse, "0 8 flakey 7:0 0 1 1 " .. s) end,
  function(s) check(s, dm.key.from_hex, s) end,
  function(s)
    for _, ty in ipairs {"snapshot", "striped", "linear", "crypt", "delay", "flakey", "unstriped", "log-writes", "era",
                         "cache", "writecache", "integrity", "thin-pool", "thin", "raid"} do
      check(s, target.status, ty, s)
    end
    check(s, dm.snapshot.status, s)
  end,
}

local t0 = os.clock()
for i = 1, N do
  current = i
  local input = math.random(3) == 1 and random_text() or mutate(pick(seeds))
  local k = i % 10 < 5 and 1 or math.random(#kinds)
  kinds[k](input)
end
print(("fuzz: %d inputs, seed %d, %.1f s, %d findings"):format(N, SEED, os.clock() - t0, findings))
os.exit(findings == 0 and 0 or 1, true) -- closing the state runs every __gc under the sanitizers
