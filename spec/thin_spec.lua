-- Thin provisioning: the thin-pool and thin targets, their messages, the
-- dm.thin workflow (pool, volumes, snapshots at any depth) and thin stacks.
local dm = require "devmapper"
local support = require "spec.support"
local refused = support.refused
after_each(support.cleanup)

local devs = support.fake {
  ["7:0"] = {path = "/dev/loop0", major = 7, minor = 0, sectors = 4096, logical_block_size = 512},
  ["7:1"] = {path = "/dev/loop1", major = 7, minor = 1, sectors = 4096, logical_block_size = 512},
  ["254:0"] = {path = "/dev/mapper/pool", major = 254, minor = 0, sectors = 4096, logical_block_size = 512},
}
local function valid(t) return function() dm.table(t):validate(devs) end end

describe("thin targets", function()
  it("build, format and parse as the kernel prints them", function()
    local p = dm.thin_pool {metadata = "7:0", data = "7:1", block = "64KiB", length = 4096}
    assert.equal("0 4096 thin-pool 7:0 7:1 128 0 0", tostring(dm.table {p}))
    p = dm.thin_pool {metadata = "7:0", data = "7:1", block = 256, low_water = 16, length = 4096,
                      features = {"no_discard_passdown", skip_block_zeroing = true}}
    assert.equal("0 4096 thin-pool 7:0 7:1 256 16 2 skip_block_zeroing no_discard_passdown", tostring(dm.table {p}))
    assert.equal("0 4096 thin-pool 7:0 7:1 128 0 0", tostring(dm.table.parse("0 4096 thin-pool 7:0 7:1 128 0")))
    assert.equal("0 4096 thin-pool 7:0 7:1 128 0 1 error_if_no_space",
                 tostring(dm.table.parse("0 4096 thin-pool 7:0 7:1 128 0 1 ERROR_IF_NO_SPACE")))
    assert.equal("0 2048 thin 254:0 7", tostring(dm.table {dm.thin {"254:0", id = 7, length = 2048}}))
    assert.equal("0 2048 thin 254:0 7 7:3", tostring(dm.table.parse("0 2048 thin 254:0 7 7:3")))
    assert.same({transaction = 3, metadata_used = 10, metadata_total = 512, data_used = 3, data_total = 32,
                 held_root = 7, mode = "rw", discard = "discard_passdown", error_if_no_space = false,
                 needs_check = false, metadata_low_water = 128},
                require("devmapper.target").status("thin-pool", "3 10/512 3/32 7 rw discard_passdown queue_if_no_space - 128 "))
    assert.same({mode = "fail", failed = true}, require("devmapper.target").status("thin-pool", "Fail"))
    assert.same({mapped = 2048, highest = 4095}, require("devmapper.target").status("thin", "2048 4095"))
    assert.same({mapped = 0}, require("devmapper.target").status("thin", "0 -"))
  end)

  it("refuse what the kernel would refuse or read otherwise, naming the field and the rule", function()
    local function pool(f)
      f.metadata, f.data, f.length = f.metadata or "7:0", f.data or "7:1", f.length or 4096
      return function() valid {dm.thin_pool(f)}() end
    end
    refused(pool {block = 64}, "field 'block' must be at least 128")
    refused(pool {block = 192}, "field 'block' 192 sectors must be a multiple of 128 (64 KiB)")
    refused(pool {block = "2GiB"}, "field 'block' must be at most 2097152")
    refused(pool {low_water = -1}, "field 'low_water' must be at least 0")
    refused(pool {data = "7:0"}, "field 'data' must not be the metadata device")
    refused(pool {features = {"bogus"}}, "unknown option 'bogus'")
    refused(pool {features = {"skip_block_zeroing", "ignore_discard", "no_discard_passdown", "read_only",
                              "error_if_no_space"}}, "field 'features' may hold at most 4")
    refused(pool {features = {"read_only"}, format = true}, "read_only is refused on a new pool")
    refused(pool {length = 100}, "field 'length' 100 sectors hold no whole data block of 128 sectors")
    refused(pool {format = "yes"}, "field 'format' must be true or false")
    refused(valid {dm.thin_pool {metadata = "7:0", data = "7:1", length = 4096}, dm.zero(8)},
            "thin-pool must be the only segment of its table")
    refused(function() dm.table.parse("0 4096 thin-pool 7:0 7:1 128 0 0 extra") end, "the kernel would ignore it")
    refused(function() dm.table.parse("0 4096 thin-pool 7:0 7:1 128 0 2 read_only READ_ONLY") end, "given twice")
    refused(function() dm.thin {"254:0", id = 1 << 24, length = 8} end, "field 'id' must be at most 16777215")
    refused(function() dm.thin {"254:0", id = -1, length = 8} end, "field 'id' must be at least 0")
    refused(function() dm.thin {"254:0", length = 8} end, "field 'id' is required")
    refused(valid {dm.thin {"254:0", id = 1}}, "field 'length' is required")
    refused(valid {dm.thin {"254:0", id = 1, origin = "254:0", length = 8}},
            "field 'origin' must not be the pool")
    refused(function() dm.table.parse("0 8 thin 254:0 1 7:3 extra") end, "the kernel would ignore it")
    refused(function() dm.thin.pool {metadata = "7:0", data = "7:1", blocks = 4} end, "blocks")
  end)

  it("show the create_thin a device made from a builder needs, in a dry run", function()
    local text = support.dry(function()
      local m = dm.loop.create("/tmp/dry-thin1", "2MiB")
      local d = dm.loop.create("/tmp/dry-thin2", "2MiB")
      local s = dm.stack {prefix = "drythin", pool = dm.thin_pool {metadata = m, data = d},
                          vol = dm.thin {"pool", id = 3, length = "1MiB"}}
      s:apply()
    end)
    assert.matches("dmsetup message drythin%-pool 0 'create_thin 3'\ndmsetup create drythin%-vol", text)
    assert.matches("'0 2048 thin %d+:%d+ 3'", text)
  end)
end)

describe("thin provisioning #kernel", function()
  local function fill(path, offset, text, n) support.write(path, offset, text:rep(n or 1)) end

  it("a pool as dmsetup makes it; messages checked first, sent as methods", function()
    local m, d = support.loops(2, "8MiB")
    local pool = support.device("spec-pool", dm.thin_pool {metadata = m, data = d, block = "64KiB", low_water = 4})
    local want = ("0 16384 thin-pool %s %s 128 4 0"):format(m:devno(), d:devno())
    assert.equal(want, support.dmsetup("table spec-pool"))
    local st = pool:status()[1].status
    assert.equal(0, st.transaction)
    assert.same({0, 128, "rw"}, {st.data_used, st.data_total, st.mode})
    pool:create_thin(1)
    local vol = support.device("spec-vol", dm.thin {pool, id = 1, length = "16MiB", create = false})
    assert.equal(("0 32768 thin %d:%d 1"):format(pool:info().major, pool:info().minor), support.dmsetup("table spec-vol"))
    fill(vol.path, 0, "thin", 1024)
    assert.equal("thinthin", support.read(vol.path, 0, 8))
    assert.same({mapped = 128, highest = 127}, vol:status()[1].status)
    -- the pool's own ids, transaction id and metadata snapshot
    pool:set_transaction_id(0, 42)
    assert.equal(42, pool:status()[1].status.transaction)
    pool:reserve_metadata_snap()
    assert.equal("integer", math.type(pool:status()[1].status.held_root))
    pool:release_metadata_snap()
    assert.is_nil(pool:status()[1].status.held_root)
    -- the kernel's refusals come back as errors; the module's come first
    local ok, err = pcall(pool.create_thin, pool, 1)
    assert.is_false(ok)
    assert.equal(17, err.errno) -- EEXIST
    ok, err = pcall(pool.set_transaction_id, pool, 0, 1)
    assert.is_false(ok)
    assert.matches("Failed to change transaction id", tostring(err))
    local before = dm.kernel.count.dm_message or 0
    refused(function() pool:create_thin(1 << 24) end, "field 'id' must be an integer from 0 to 16777215")
    refused(function() pool:create_thin("1") end, "field 'id' must be an integer")
    refused(function() pool:create_snap(2, 2) end, "field 'id' must not be the origin's id")
    refused(function() pool:create_snap(2, 1, "spec-vol") end, "field 'origin_device' must be the origin's Device")
    refused(function() pool:set_transaction_id(-1, 0) end, "field 'current'")
    refused(function() vol:create_thin(5) end, "is not a message of its targets (thin)")
    assert.equal(before, dm.kernel.count.dm_message or 0)
    -- a snapshot made with its origin suspended around it, then deleted
    pool:create_snap(2, 1, vol)
    assert.is_false(vol:info().suspended)
    local snap = support.device("spec-snap", dm.thin {pool, id = 2, length = "16MiB", create = false})
    fill(vol.path, 0, "new!")
    assert.equal("thin", support.read(snap.path, 0, 4))
    assert.equal("new!", support.read(vol.path, 0, 4))
    snap:remove()
    pool:delete(2)
    ok = pcall(dm.create, "spec-snap", dm.thin {pool, id = 2, length = 8, create = false})
    assert.is_false(ok, "a deleted id does not open")
    -- data survives the pool being made again from its metadata
    vol:remove()
    pool:remove()
    pool = support.device("spec-pool", dm.thin_pool {metadata = m, data = d, block = "64KiB", low_water = 4})
    vol = support.device("spec-vol", dm.thin {pool, id = 1, length = "16MiB"})   -- create: it exists, opened
    assert.equal("new!thin", support.read(vol.path, 0, 8))
    assert.equal(42, pool:status()[1].status.transaction)
    vol:remove()
    pool:remove()
    -- format = true: the old pool is gone
    pool = support.device("spec-pool", dm.thin_pool {metadata = m, data = d, format = true})
    assert.equal(0, pool:status()[1].status.transaction)
    ok = pcall(dm.create, "spec-vol", dm.thin {pool, id = 1, length = 8, create = false})
    assert.is_false(ok)
  end)

  it("dm.thin.pool: volumes, a snapshot chain, usage, delete, remove in order", function()
    local m, d = support.loops(2, "16MiB")
    local pool = dm.thin.pool {name = "spec-tp", metadata = m, data = d}
    support.defer(function() pcall(pool.remove, pool) end)
    local a = pool:volume("spec-a", "64MiB")   -- larger than the pool: thin
    local b = pool:volume("spec-b", "8MiB")
    assert.same({0, 1}, {a.id, b.id})
    fill(a.path, 0, "gen1")
    local s1 = a:snapshot("spec-a1")
    fill(a.path, 0, "gen2")
    local s2 = s1:snapshot("spec-a2")          -- a snapshot of a snapshot
    fill(s1.path, 0, "s1s1")
    local s3 = s2:snapshot("spec-a3")
    assert.same({"gen2", "s1s1", "gen1", "gen1"},
                {support.read(a.path, 0, 4), support.read(s1.path, 0, 4), support.read(s2.path, 0, 4),
                 support.read(s3.path, 0, 4)})
    assert.equal(a.device:sectors(), s3.device:sectors())
    local u = pool:usage()
    assert.is_true(u.data_used >= 3 and u.data_total == 256, tostring(u))
    assert.matches("^data %d+/256 blocks, metadata %d+/%d+ blocks, rw$", tostring(u))
    assert.is_true(a:usage().mapped >= 128)
    -- an id taken by someone else is passed over
    pool.device:create_thin(6)
    pool.next_id = 6
    local c = pool:volume("spec-c", "1MiB")
    assert.equal(7, c.id)
    refused(function() pool:volume("spec-d", "1MiB", {id = 1 << 24}) end, "field 'id' must be an integer from 0 to 16777215")
    refused(function() pool:volume("spec-d", "1MiB", {create = false}) end, "field 'id' is required with create = false")
    refused(function() pool:volume("spec-d") end, "field 'size' is required")
    refused(function() pool:volume("spec-d", "1MiB", {bogus = 1}) end, "bogus")
    local ok, err = pcall(pool.volume, pool, "spec-a", "1MiB")   -- the name is taken: the new id goes again
    assert.is_false(ok)
    assert.matches("step 'create volume' failed", tostring(err))
    ok = pcall(dm.create, "spec-x", dm.thin {pool.device, id = 8, length = 8, create = false})
    assert.is_false(ok, "the id of the failed volume was deleted again")
    -- delete: the device and its data
    s3:delete()
    ok = pcall(dm.create, "spec-x", dm.thin {pool.device, id = s3.id, length = 8, create = false})
    assert.is_false(ok)
    -- a device of the pool's not made here keeps the pool, and is named
    local other = support.device("spec-other", dm.thin {pool.device, id = 6, length = 8})
    ok, err = pcall(pool.remove, pool)
    assert.is_false(ok)
    assert.matches("is still in use %(by spec%-other%)", tostring(err))
    other:remove()
    pool:remove()
    assert.same({}, support.names())
    -- reopened from its metadata: the volumes are there to open
    pool = dm.thin.pool {name = "spec-tp", metadata = m, data = d}
    local again = pool:volume("spec-a2", "64MiB", {id = s2.id, create = false})
    assert.equal("gen1", support.read(again.path, 0, 4))
    pool:remove()
  end)

  it("a scope takes volumes down before their pool", function()
    local m, d = support.loops(2, "8MiB")
    do
      local s <close> = dm.scope()
      local pool = dm.thin.pool {name = "spec-tp", metadata = m, data = d}
      local v = pool:volume("spec-v", "4MiB")
      v:snapshot("spec-vs")
    end
    assert.same({}, support.names())
  end)

  it("stacks: a pool, volumes and a crypt device over one; apply, re-apply, teardown, apply again", function()
    local m, d = support.loops(2, "16MiB")
    local key = dm.key.random(64)
    local function def()
      return dm.stack {prefix = "spec_thin", pool = dm.thin_pool {metadata = m, data = d, block = "128KiB"},
                       v1 = dm.thin {"pool", id = 1, length = "32MiB"},
                       v2 = dm.thin {"pool", id = 2, length = "8MiB"},
                       secret = dm.crypt {"v1", key = key}}
    end
    support.defer(function() pcall(dm.cleanup, "spec_thin") end)
    local s = def()
    assert.equal("pool", s.order[1])
    s:apply()
    fill("/dev/mapper/spec_thin-secret", 0, "hidden")
    fill("/dev/mapper/spec_thin-v2", 0, "plain")
    local plan = def():plan()
    for _, step in ipairs(plan) do assert.equal("keep", step.op, step.name) end
    def():apply()
    s:teardown()
    assert.same({}, support.names())
    -- the volumes live in the pool: applied again, they are there with their data
    s = def()
    s:apply()
    assert.equal("hidden", support.read("/dev/mapper/spec_thin-secret", 0, 6))
    assert.equal("plain", support.read("/dev/mapper/spec_thin-v2", 0, 5))
    dm.cleanup("spec_thin")
    assert.same({}, support.names())
  end)
end)
