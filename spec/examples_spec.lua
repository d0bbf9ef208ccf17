-- The article's workflows: each example's table equals what the article's own
-- dmsetup command makes on the same loops, and each example leaves nothing.
local dm = require "devmapper"
local support = require "spec.support"
after_each(support.cleanup)

-- The article's commands, for loops at $L1 and $L2.
local article = {
  new = 'echo "0 $(blockdev --getsize $L1) linear $L1 0" | dmsetup create new',
  half = 'echo "0 2048 linear $L1 0" | dmsetup create half',
  onenahalf = 'printf "0 2048 linear $L1 2048\\n2048 4096 linear $L2 0\\n" | dmsetup create onenahalf',
  tiger = 'echo "0 8192 striped 2 16 $L1 0 $L2 0" | dmsetup create tiger',
}

local function oracle(name, l1, l2)
  local _, code = support.sh(("export DM_DISABLE_UDEV=1 L1=%s L2=%s; %s"):format(l1.path, l2.path, article[name]))
  assert.equal(0, code)
  local text = support.dmsetup("table " .. name)
  support.dmsetup("remove " .. name)
  return text
end

-- Runs an example with its loops replaced by ours, capturing the tables it makes.
local function run_example(name, l1, l2)
  local loops, captured = {l1, l2}, {}
  local proxy = setmetatable({
    loop = setmetatable({create = function() return table.remove(loops, 1) end}, {__index = dm.loop}),
    create = function(n, t, o)
      local d = dm.create(n, t, o)
      captured[n] = support.text(d:table())
      return d
    end,
  }, {__index = dm})
  local env = setmetatable({require = function(m) return m == "devmapper" and proxy or require(m) end,
                            print = function() end, arg = {}}, {__index = _G})
  assert(loadfile("examples/" .. name .. ".lua", "t", env))()
  return captured[name]
end

describe("article examples #kernel", function()
  for _, name in ipairs {"new", "half", "onenahalf", "tiger"} do
    it(name .. " makes the table the article's dmsetup command makes", function()
      local l1, l2 = support.loops(2, "2MiB")
      local want = oracle(name, l1, l2)
      assert.truthy(want:match("^0 %d+ "))
      assert.equal(want, run_example(name, l1, l2))
      assert.is_false((pcall(dm.device, name)), "the example removed its device")
    end)
  end

  it("each example runs under dmlua and leaves no device and no loop", function()
    local dir = support.tmpdir()
    for _, name in ipairs {"new", "half", "onenahalf", "tiger"} do
      local out, code = support.sh(("build/dmlua examples/%s.lua %s"):format(name, dir))
      assert.equal(0, code, out)
      assert.matches(name .. ":%s+0 %d+ ", out)
      assert.same({}, support.names())
      assert.same({}, dm.loop.find(dir .. "/store1"))
      assert.same({}, dm.loop.find(dir .. "/store2"))
    end
  end)

  it("thin.lua makes a pool, volumes larger than it and a snapshot chain, and leaves nothing", function()
    local dir = support.tmpdir()
    local out, code = support.sh("build/dmlua examples/thin.lua " .. dir)
    assert.equal(0, code, out)
    for _, line in ipairs {"three volumes of 2304 MiB in all, on a pool of 64 MiB", "home:        wednesday",
                           "monday:      monday", "tuesday:     tuesday", "monday copy: monday", "left behind: 0 devices"} do
      assert.matches(line, out, 1, true)
    end
    assert.matches("pool:        data %d+/1024 blocks, metadata %d+/%d+ blocks, rw", out)
    assert.same({}, support.names())
    assert.same({}, dm.loop.find(dir .. "/thin-data.img"))
  end)

  it("luks.lua formats, opens, mounts, reopens with a second passphrase, and leaves nothing", function()
    local dir = support.tmpdir()
    local out, code = support.sh("build/dmlua examples/luks.lua " .. dir)
    assert.equal(0, code, out)
    assert.matches("read back: meet me at the usual place", out, 1, true)
    assert.matches("old one:   refused (wrong passphrase)", out, 1, true)
    assert.same({}, support.names())
    assert.same({}, dm.loop.find(dir .. "/luks.img"))
    assert.is_false(support.opens(dir .. "/luks.img"))
  end)

  it("faults.lua runs ext4 over delay and flakey: a dropped write is gone after a remount, a failed one fails fsync", function()
    local dir = support.tmpdir()
    local out, code = support.sh("build/dmlua examples/faults.lua " .. dir)
    assert.equal(0, code, out)
    assert.matches("flaky: 0 131072 flakey 7:%d+ 0 0 3600 1 drop_writes", out)
    assert.matches("slow:  0 131072 delay 25%d:%d+ 0 0 25%d:%d+ 0 200", out)
    local took = tonumber(out:match("synced kept.txt in ([%d.]+) s"))
    assert.is_true(took and took >= 0.2, out)
    assert.matches("lost.txt synced: true", out, 1, true)
    assert.matches("after remount: kept.txt present, lost.txt gone", out, 1, true)
    assert.matches("failing.txt synced: false", out, 1, true)
    assert.same({}, support.names())
    assert.same({}, dm.loop.find(dir .. "/faults.img"))
  end)
end)
