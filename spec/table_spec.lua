-- Tables without devices: composition, format, parse round trips, rejections.
local dm = require "devmapper"
local refused = require("spec.support").refused

describe("table", function()
  it("formats exactly as dmsetup table prints", function()
    local t = dm.table {dm.linear("7:0", {offset = 2048, length = 2048}), dm.linear("7:1", {length = 4096})}
    assert.equal("0 2048 linear 7:0 2048\n2048 4096 linear 7:1 0", tostring(t))
    assert.equal(6144, t:length())
    assert.equal("0 100 zero\n100 8 error", tostring(dm.table {dm.zero(100), dm.error(8)}))
  end)

  it("takes sizes with units", function()
    assert.equal("0 2048 zero", tostring(dm.table {dm.zero("1MiB")}))
    assert.equal("0 4 zero", tostring(dm.table {dm.zero("2KiB")}))
    assert.equal("0 16 linear 7:0 8", tostring(dm.table {dm.linear("7:0", {offset = "4KiB", length = "16s"})}))
  end)

  it("round-trips dmsetup table text through parse", function()
    for _, text in ipairs {
      "0 8192 striped 2 16 7:0 0 7:1 0",
      "0 2048 linear 7:0 2048\n2048 4096 linear 7:1 0",
      "0 100 zero\n100 8 error",
      "0 4096 striped 3 8 7:0 16 7:1 32 7:2 0",
      "0 1024 thin-pool 7:0 7:1 128 0 1 skip_block_zeroing", -- unknown type: verbatim
    } do
      assert.equal(text, tostring(dm.table.parse(text)))
    end
    local t = dm.table.parse("0 8192 striped 2 16 7:0 0 7:1 0")
    assert.equal("striped", t[1].type)
    assert.equal(16, t[1].chunk)
    assert.equal("7:1", t[1].stripes[2].dev)
  end)

  it("computes starts when composing, also from parsed segments", function()
    local a = dm.table.parse("0 10 zero")
    local t = dm.table {a, dm.error(5), a}
    assert.equal("0 10 zero\n10 5 error\n15 10 zero", tostring(t))
  end)

  it("refuses what is not a table", function()
    refused(function() dm.table.parse("0 x") end, "line 1: expected 'start length type parameters'")
    refused(function() dm.table.parse("0 x linear") end, "line 1: field 'length' must be a decimal integer")
    refused(function() dm.table.parse("0 8 linear 7:0 0 extra") end,
            "field 'params' has 1 word more than linear takes (<dev> <offset>): the kernel would ignore it")
    refused(function() dm.table.parse("0 8 striped 2 16 7:0 0") end, "field 'stripes' count 2 needs 4 words, but 2 follow")
    refused(function() dm.table {42} end, "segment 1 must be a target")
    refused(function() dm.zero(0) end, "zero: field 'length' must be more than 0")
    refused(function() dm.zero("3 parsecs") end, "field 'length' must be sectors (an integer) or a size string such as '2MiB'")
    refused(function() dm.zero("100B") end, "must be a whole number of 512-byte sectors")
  end)

  it("refuses gaps, overlaps and a first start other than 0", function()
    refused(function() dm.table.parse("0 10 zero\n12 5 zero"):validate() end,
            "segment 2 (zero): field 'start' must be 10, where segment 1 ends (a gap of 2 sectors)")
    refused(function() dm.table.parse("0 10 zero\n8 5 zero"):validate() end, "(an overlap of 2 sectors)")
    refused(function() dm.table.parse("5 10 zero"):validate() end, "segment 1 (zero): field 'start' must be 0")
    refused(function() dm.table {}:validate() end, "table must have at least one segment")
  end)

  it("refuses bad striped parameters", function()
    refused(function() dm.table.parse("0 64 striped 2 0 7:0 0 7:1 0"):validate() end,
            "line 1 (striped): field 'chunk' must be at least 1 (it is 0)")
    refused(function() dm.table {dm.striped {chunk = 16}}:validate() end,
            "striped: field 'stripes' must name at least 1 device")
  end)

  it("refuses bad device names and uuids before the kernel", function()
    local t = dm.table {dm.zero(8)}
    refused(function() dm.create("a/b", t) end, "field 'name' must not contain '/'")
    refused(function() dm.create("", t) end, "field 'name' must be 1 to 127 bytes long")
    refused(function() dm.create(("x"):rep(128), t) end, "must be 1 to 127 bytes long (it is 128)")
    refused(function() dm.create("control", t) end, "must not be 'control' (reserved)")
    refused(function() dm.create("ok", t, {uuid = ("u"):rep(129)}) end, "field 'uuid' must be a string of 1 to 128 bytes")
  end)

  it("gives errors that print as one line naming the operation", function()
    local err = refused(function() dm.create("x/y", dm.table {dm.zero(8)}) end, "create 'x/y':")
    assert.equal("create", err.op)
    assert.equal("x/y", err.name)
    assert.is_nil(tostring(err):find("\n"))
  end)
end)

describe("require 'devmapper'", function()
  it("adds no globals", function()
    local before = {}
    for k in pairs(_G) do before[k] = true end
    for name in pairs(package.loaded) do
      if name:match("^devmapper") then package.loaded[name] = nil end
    end
    require "devmapper"
    for k in pairs(_G) do assert.is_true(before[k], "new global: " .. tostring(k)) end
  end)
end)
