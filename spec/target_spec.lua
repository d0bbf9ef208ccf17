-- The declarative targets: the kernel's number grammar, words never dropped,
-- every Lua form checked, keys never shown, errors always the error object.
local dm = require "devmapper"
local field = require "devmapper.field"
local target = require "devmapper.target"
local support = require "spec.support"
local refused = support.refused

local devs = support.fake {
  ["7:0"] = {path = "/dev/loop0", major = 7, minor = 0, sectors = 4096, logical_block_size = 512},
  ["7:1"] = {path = "/dev/loop1", major = 7, minor = 1, sectors = 4096, logical_block_size = 512},
  ["7:3"] = {path = "/dev/loop3", major = 7, minor = 3, sectors = 4096, logical_block_size = 4096},
}

local function parse_ok(text) return tostring(dm.table.parse(text)) end

describe("target grammar", function()
  it("reads numbers exactly as each kernel parser does, and prints them as the kernel prints them", function()
    -- sscanf("%llu"): digits only; kstrtouint: an optional '+'
    assert.equal("0 8 linear 7:0 10", parse_ok("0 8 linear 7:0 010"))
    assert.equal("0 64 striped 2 16 7:0 0 7:1 0", parse_ok("0 64 striped +2 +016 7:0 000 07:01 0"))
    for _, w in ipairs {"0x10", "1e3", "+16", "8.0", "-1", "", "１６"} do
      refused(function() dm.table.parse("0 8 linear 7:0 " .. w .. (w == "" and "x" or "")) end, "field 'offset'")
    end
    refused(function() dm.table.parse("0 64 striped -2 16 7:0 0 7:1 0") end, "field '#stripes' must be a decimal integer")
    refused(function() dm.table.parse("0 8 linear 7:0 18446744073709551616") end, "must be at most 9223372036854775807")
    refused(function() dm.table.parse("0 8 linear 7:0 9223372036854775808") end, "the kernel would wrap")
    refused(function() dm.table.parse("0 64 striped 4294967296 16 7:0 0") end, "must be at most 4294967295")
    refused(function() dm.table.parse("0x0 8 zero") end, "line 1: field 'start' must be a decimal integer")
    refused(function() dm.table.parse("0 1e3 zero") end, "line 1: field 'length' must be a decimal integer")
    assert.equal("0 9223372036854775807 zero", parse_ok("0 9223372036854775807 zero"))
    refused(function() dm.table.parse("0 9223372036854775808 zero") end, "line 1: field 'length' must be at most")
  end)

  it("takes numbers from Lua as integers or exact sizes, never floats, never rounded", function()
    assert.equal("0 3072 zero", tostring(dm.table {dm.zero("1.5MiB")}))
    assert.equal("0 1 zero", tostring(dm.table {dm.zero("0.5KiB")}))
    refused(function() dm.zero("1.5s") end, "must be a whole number of 512-byte sectors ('1.5s' is 768 bytes)")
    refused(function() dm.zero("1.0001KiB") end, "is not a whole number of bytes")
    refused(function() dm.zero("100B") end, "must be a whole number of 512-byte sectors")
    refused(function() dm.zero(8.0) end, "field 'length' must be an integer (sectors) or a size string, got the float 8.0")
    refused(function() dm.linear("7:0", {offset = 2.5}) end, "field 'offset' must be an integer")
    refused(function() dm.linear("7:0", {offset = -1}) end, "field 'offset' must be at least 0 (it is -1)")
    refused(function() dm.zero(math.huge) end, "got the float inf")
    refused(function() dm.zero("99999999999EiB") end, "must be sectors (an integer) or a size string")
    refused(function() dm.zero("99999999999999PiB") end, "is too large")
    refused(function() dm.zero("2048") end, "must be sectors (an integer) or a size string such as '2MiB'")
    local big = (1 << 55) + 1
    assert.equal(("0 %d zero"):format(big), tostring(dm.table {dm.zero(big)}))
    refused(function() dm.linear("7:0", {length = "9999999PiB"}) end, "is too large")
  end)

  it("refuses a field a target does not have", function()
    refused(function() dm.linear("7:0", {offest = 8}) end, "linear: field 'offest' is not a field of linear")
    refused(function() dm.crypt {"7:0", key = dm.key.random(64), iv_offest = 8} end, "field 'iv_offest' is not a field")
    refused(function() dm.snapshot {origin = "7:0", cow = "7:1", chunks = 8} end, "field 'chunks' is not a field")
    refused(function() dm.striped {chunk = 8, "7:0", strip = 1} end, "field 'strip' is not a field")
  end)

  it("passes every option in every Lua form, or refuses it", function()
    local k = dm.key.random(64)
    local function text(o)
      return tostring(dm.table {dm.crypt {"7:0", key = k, keyring = false, length = 8, options = o}}):match(" 7:0 0(.*)$")
    end
    assert.equal(" 1 allow_discards", text "allow_discards")
    assert.equal(" 1 allow_discards", text {"allow_discards"})
    assert.equal(" 1 allow_discards", text {allow_discards = true})
    assert.equal("", text {allow_discards = false})
    assert.equal(" 3 allow_discards same_cpu_crypt sector_size:4096",
                 text {"same_cpu_crypt", allow_discards = true, sector_size = 4096})
    assert.equal(" 2 allow_discards sector_size:4096", text {"sector_size:4096", "allow_discards"})
    assert.equal("", text {sector_size = 512}) -- the kernel leaves out its default too
    refused(function() text {"allow_discards", "allow_discards"} end, "option 'allow_discards' is given twice")
    refused(function() text {"allow_discards", allow_discards = true} end, "is given twice")
    refused(function() text {"bogus"} end, "unknown option (a word not shown: it may be a key)")
    refused(function() text {bogus = true} end, "unknown option (a word not shown")
    refused(function() dm.snapshot {origin = "7:0", cow = "7:1", features = {"bogus"}} end, "unknown option 'bogus'")
    refused(function() text {allow_discards = "yes"} end, "option 'allow_discards' is a flag")
    refused(function() text {"sector_size"} end, "option 'sector_size' needs a value")
    refused(function() text {"allow_discards:1"} end, "option 'allow_discards' takes no value")
    refused(function() text(42) end, "field 'options' must be a list of options or a map")
    assert.equal(" 2 discard_zeroes_cow discard_passdown_origin", tostring(dm.table {dm.snapshot {
      origin = "7:0", cow = "7:1", length = 8, features = {"discard_passdown_origin", "discard_zeroes_cow"}}}):match(" P 8(.*)$"))
    refused(function() dm.snapshot {origin = "7:0", cow = "7:1", features = "discard_passdown_origin"} end,
            "option 'discard_passdown_origin' needs option 'discard_zeroes_cow'")
    -- flags in any case (strcasecmp); options with a value exactly (the kernel's sscanf)
    assert.equal(" 1 allow_discards", text {"ALLOW_DISCARDS"})
    refused(function() dm.table.parse("0 8 crypt aes :32:logon:x 0 7:0 0 1 SECTOR_SIZE:4096") end, "unknown option")
    refused(function() text {"Sector_size:4096"} end, "unknown option")
    refused(function() text {SECTOR_SIZE = 4096} end, "unknown option")
    -- the same option twice, in any case and any order of a map, is refused every time
    for _ = 1, 20 do
      refused(function() text {ALLOW_DISCARDS = false, allow_discards = true} end, "is given twice")
    end
    refused(function() text {[1] = "allow_discards", [3] = "same_cpu_crypt"} end, "without holes")
    -- the top-level sector_size is the option, given once
    assert.equal(" 1 sector_size:4096",
                 tostring(dm.table {dm.crypt {"7:0", key = k, length = 8, sector_size = 4096}}):match(" 7:0 0(.*)$"))
    refused(function() dm.crypt {"7:0", key = k, sector_size = 4096, options = {sector_size = 512}} end, "given twice")
    refused(function() dm.crypt {"7:0", key = k, sector_size = 4096, options = "sector_size:512"} end, "given twice")
  end)

  it("takes each builder field once, by position or by name, and refuses the rest", function()
    local k = dm.key.random(32)
    refused(function() dm.linear("7:0", {dev = "7:1"}) end, "field 'dev' is given twice")
    refused(function() dm.origin("7:0", {origin = "7:1"}) end, "field 'origin' is given twice")
    refused(function() dm.crypt {"7:0", dev = "7:1", key = k} end, "field 'dev' is given twice")
    refused(function() dm.snapshot {"7:0", "7:1", cow = "7:3"} end, "field 'cow' is given twice")
    refused(function() dm.snapshot {"7:0", "7:1", "7:3"} end, "value [3] has no field")
    refused(function() dm.linear("7:0", 8) end, "linear: expected a table of fields, got number")
    refused(function() dm.origin("7:0", "x") end, "expected a table of fields, got string")
    refused(function() dm.striped {chunk = 16, "7:0", [3] = "7:1"} end, "listed from 1 without holes")
    refused(function() dm.striped {chunk = 16, "7:0", {"7:1", offest = 8}} end, "stripe 2 has no field 'offest'")
    refused(function() dm.striped {chunk = 16, "7:0", {"7:1", 8}} end, "stripe 2 has no field")
    refused(function() dm.striped {chunk = 16, "7:0", stripes = {{dev = "7:1"}}} end, "field 'stripes' is given twice")
    refused(function() dm.striped {chunk = 16, stripes = {{dev = "7:1", ofset = 2}}} end, "has no field 'ofset'")
    refused(function() dm.striped {chunk = 16, stripes = {"7:1"}} end, "stripes[1]' must be a table")
    refused(function() dm.snapshot {origin = "7:0", cow = "7:1", reuse = "no"} end, "field 'reuse' must be true or false")
    refused(function() dm.crypt {"7:0", key = k, keyring = 0} end, "field 'keyring' must be true or false")
    -- a key is a Key, "-" or a keyring reference; never a table that looks like one
    refused(function() dm.crypt {"7:0", key = {ref = ":32:logon:x"}} end, "field 'key' must be a dm.key object")
    refused(function() dm.crypt {"7:0", key = {ref = ("00"):rep(16), size = 16}} end, "field 'key' must be a dm.key")
    refused(function() dm.crypt {"7:0", key = ":32:logon:x 0 7:1 0"} end, "field 'key' must be one word")
    assert.equal("0 8 crypt aes-xts-plain64 :32:logon:devmapper:mine 0 7:0 0",
                 tostring(dm.table {dm.crypt {"7:0", key = ":32:logon:devmapper:mine", length = 8}}))
  end)

  it("reads every word or refuses the table: nothing is dropped", function()
    refused(function() dm.table.parse("0 8 linear 7:0 0 extra") end, "has 1 word more than linear takes")
    refused(function() dm.table.parse("0 8 snapshot-origin 7:0 7:1") end, "has 1 word more than snapshot-origin takes")
    refused(function() dm.table.parse("0 8 snapshot 7:0 7:1 P 8 1 discard_zeroes_cow x") end, "has 1 word more")
    refused(function() dm.table.parse("0 8 crypt aes-xts-plain64 :64:logon:devmapper:a 0 7:0 0 1 allow_discards x") end,
            "has 1 word more")
    refused(function() dm.table.parse("0 8 zero 0") end, "has 1 word more than zero takes (no parameters)")
    refused(function() dm.table.parse("0 8 error 0") end, "has 1 word more than error takes")
    refused(function() dm.table.parse("0 8 crypt aes-xts-plain64 :64:logon:devmapper:a 0 7:0 0 3 allow_discards") end,
            "count 3 is more than the 1 words that follow")
    refused(function() dm.table.parse("0 8 snapshot 7:0 7:1 P 8 1e18") end, "field 'features' count must be a decimal")
    refused(function() dm.table.parse("0 8 snapshot 7:0 7:1 P 8 3 a b c") end, "must be at most 2")
    refused(function() dm.table.parse("0 8 snapshot 7:0 7:1 Prabbit 8") end, "field 'persistent' must be P")
    refused(function() dm.table.parse("0 8 linear 7:0") end, "field 'offset' is missing: linear takes <dev> <offset>")
    -- unknown types: the parameter text goes to the kernel as it is
    assert.equal("0 8 flakey 7:0 0 1 1 1 drop_writes", parse_ok("0 8 flakey   7:0 0 1 1 1 drop_writes  "))
  end)

  it("splits words as the kernel gets them: a backslash is an ordinary byte, 0xA0 is white space", function()
    -- libdevmapper doubles every backslash it sends, so the kernel never joins two words
    assert.same({"a\\", "b", "c\\\\", "d"}, field.split("a\\ b  c\\\\ d"))
    assert.same({"x", "y"}, field.split("x\xa0y"))
    refused(function() dm.table.parse("0 16 linear 7:0 1\\6") end, "field 'offset' must be a decimal integer")
    refused(function() dm.table.parse("0 16 snapshot 7:0 7:1 P 1\\6") end, "field 'chunk' must be a decimal integer")
    assert.equal("0 8 linear 7\\:0 0", parse_ok("0 8 linear 7\\:0 0"))
    -- from Lua, a word that would not reach the kernel as one word is refused
    refused(function() dm.linear("/dev/my disk") end, "field 'dev' must be one word")
    refused(function() dm.linear("/dev/a\0b") end, "field 'dev' must be one word")
    refused(function() dm.crypt {"7:0", cipher = "aes#x", key = dm.key.random(32)} end, "field 'cipher' must not hold '#'")
    -- "<key>" is where the C core writes a hex key: nowhere else
    refused(function() dm.table.parse("0 8 crypt <key> " .. ("00"):rep(32) .. " 0 7:0 0") end, "must not hold '<' or '>'")
    refused(function() dm.linear("/dev/<key>") end, "field 'dev' must not hold '<key>'")
  end)

  it("refuses a NUL byte anywhere in table text (the C core would end the text there)", function()
    refused(function() dm.table.parse("0 16 linear\0 7:0 18446744073709551632") end, "NUL")
    refused(function() dm.table.parse("0 16 zero\n16 8 error x\0y") end, "line 2")
  end)

  it("reads '#' as dmsetup does: a comment in the parameters, part of a word before them", function()
    assert.equal("0 16 linear 7:0 0", parse_ok("0 16 linear 7:0 0 # the whole of l1"))
    assert.equal("0 8 zero#x", parse_ok("0 8 zero#x"))      -- an unknown type: the kernel refuses it
    refused(function() dm.table.parse("0 16 linear 7:0#x 0") end, "field 'offset' is missing")
    assert.equal("", parse_ok("# only a comment\n   # another"))
  end)

  it("checks devices: major and minor in range, paths kept for the kernel to find", function()
    refused(function() dm.table.parse("0 8 linear 4096:0 0") end, "major must be at most 4095")
    refused(function() dm.table.parse("0 8 linear 7:1048576 0") end, "minor must be at most 1048575")
    assert.equal("0 8 linear 7:0 0", parse_ok("0 8 linear 007:000 0"))
    assert.equal("0 8 linear /dev/nonexistent 0", parse_ok("0 8 linear /dev/nonexistent 0"))
    refused(function() dm.linear(42) end, "field 'dev' must be a Loop, a Device, a path")
  end)

  it("checks areas against the devices: inside them and aligned to their logical block size", function()
    local function v(t) return function() dm.table(t):validate(devs) end end
    v {dm.linear("7:3", {offset = 8, length = 8})}()
    refused(v {dm.linear("7:3", {offset = 4, length = 8})}, "field 'offset' offset 4 must be a multiple of 8 sectors")
    refused(v {dm.linear("7:3", {offset = 8, length = 4})}, "field 'length' 4 must be a multiple of 8 sectors")
    refused(v {dm.linear("7:0", {offset = 4000, length = 100})}, "must fit in the device: 100 sectors at offset 4000")
    refused(v {dm.linear("7:0", {offset = 4096})}, "field 'length' must be more than 0")
    refused(v {dm.linear("7:0", {offset = 4096, length = 8})}, "field 'offset' 4096 is past the end of /dev/loop0")
    -- across segments: a 4K table must keep 4K boundaries where a 512-byte target cannot take a split bio
    v {dm.zero(4), dm.zero(4), dm.linear("7:3", {length = 8})}()
    refused(v {dm.linear("7:0", {length = 4}), dm.linear("7:3", {length = 8})}, "segment 2 (linear): field 'start' 4 is not aligned")
    refused(v {dm.linear("7:3", {length = 8}), dm.zero(4)}, "the table must end on its logical block size (4096 bytes)")
    refused(v {dm.crypt {"7:0", key = dm.key.random(64), length = 12, sector_size = 4096}},
            "field 'length' 12 must be a multiple of sector_size (8 sectors)")
  end)

  it("gives a parsed hex key a Key object at once, and never shows it", function()
    local hex = ("5a"):rep(64)
    local t = dm.table.parse("0 8 crypt aes-xts-plain64 " .. hex .. " 0 7:0 0")
    assert.is_true(field.is_key(t[1].key))
    assert.equal(hex, t[1].key:hex())
    local shown = tostring(t) .. t:describe() .. t:compare_text() .. tostring(t[1])
    assert.is_nil(shown:find(hex, 1, true))
    assert.matches("0 8 crypt aes%-xts%-plain64 0+ 0 7:0 0", tostring(t))
    -- a message about a bad crypt line never quotes its words (one may be the key)
    for _, text in ipairs {
      "0 8 crypt aes-xts-plain64 " .. hex .. "x 0 7:0 0", "0 8 crypt aes-xts-plain64 0 7:0 0 " .. hex,
      "0 8 crypt aes-xts-plain64 " .. hex .. " 0 7:0 0 1 " .. hex, "0 8 crypt aes-xts-plain64 " .. hex .. " 7:0 0",
    } do
      local ok, err = pcall(function() dm.table.parse(text):validate(devs) end)
      assert.is_false(ok)
      assert.is_nil(tostring(err):find(hex:sub(1, 16), 1, true), tostring(err):sub(1, 80))
    end
  end)

  it("compares keys by fingerprint, so a changed key is a changed table", function()
    local a, b = dm.key.random(64), dm.key.random(64)
    local function t(k) return dm.table {dm.crypt {"7:0", key = k, keyring = false, length = 8}} end
    assert.equal(tostring(t(a)), tostring(t(b)))              -- both show zeros
    assert.is_true(t(a) == t(dm.key.from_hex(a:hex())))
    assert.is_false(t(a) == t(b))
  end)

  it("gives every target type its builder, by name", function()
    for _, ty in ipairs {"linear", "striped", "zero", "error", "crypt", "snapshot", "snapshot-origin", "snapshot-merge"} do
      local d = target.get(ty)
      assert.equal(ty, d.type)
      assert.equal(d.builder, ty == "snapshot" and dm.snapshot.new or dm[(ty:gsub("-", "_"))])
    end
    assert.is_nil(target.get("no-such-target"))
    assert.is_nil(target.get("../init"))
    assert.is_nil(dm.no_such_target)
  end)

  it("parses status lines", function()
    local st = target.status("striped", "2 7:0 7:1 1 AD")
    assert.same({stripes = 2, devices = {"7:0", "7:1"}, health = {"alive", "dead"}}, st)
    assert.same({stripes = 2, devices = {"7:0"}, health = {}}, target.status("striped", "999999999999 7:0"))
    assert.equal(24, target.status("snapshot", "24/4096 16").used)
    assert.is_true(target.status("snapshot-merge", "Merge failed").merge_failed)
    assert.is_nil(target.status("linear", ""))
  end)

  it("parses in time linear in the input, and ends on huge input", function()
    -- VM instructions, counted (not timed): ten times the text costs about ten times as much
    local function cost(text, f)
      local n = 0
      debug.sethook(function() n = n + 1 end, "", 1000)
      pcall(f or dm.table.parse, text)
      debug.sethook()
      return n
    end
    local function lines(k)
      local t = {}
      for i = 1, k do t[i] = ("%d 8 linear 7:0 %d"):format((i - 1) * 8, i) end
      return table.concat(t, "\n")
    end
    local small, big = cost(lines(1000)), cost(lines(10000))
    assert.is_true(big < 12 * small, ("1000 lines: %d, 10000 lines: %d"):format(small, big))
    local words = ("0 8 striped 1 8 " .. ("7:0 0 "):rep(200000))
    assert.is_true(cost(words) < 40 * cost(("0 8 striped 1 8 " .. ("7:0 0 "):rep(5000))))
    refused(function() dm.table.parse("0 8 striped 99999999 8 " .. ("7:0 0 "):rep(100000)) end, "count 99999999 needs")
    refused(function() dm.table.parse(("x"):rep(10 * 1024 * 1024)) end, "line 1: expected 'start length type parameters'")
  end)

  it("fails with the error object, never a raw error, on any text (a bounded fuzzer)", function()
    local out, code = support.sh("build/dmlua spec/fuzz/run.lua 30000 " .. os.time())
    assert.equal(0, code, out)
    assert.matches("0 findings", out)
  end)
end)
