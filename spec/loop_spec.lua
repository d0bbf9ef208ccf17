-- Loop devices and block-device facts, on the real kernel (the host has loop).
local dm = require "devmapper"
local support = require "spec.support"
after_each(support.cleanup)

describe("loop #kernel", function()
  it("creates a sparse file of the given size and attaches it", function()
    local dir = support.tmpdir()
    local l = dm.loop.create(dir .. "/a", "2MiB")
    support.defer(function() pcall(l.remove, l) end)
    assert.matches("^/dev/loop%d+$", l.path)
    assert.equal(4096, l:sectors())
    assert.equal(7, l.major)
    local info = l:info()
    assert.equal(dir .. "/a", info.backing_file)
    assert.is_false(info.readonly)
    -- sparse: no blocks allocated
    local out = support.sh("stat -c %b " .. dir .. "/a")
    assert.equal(0, tonumber(out))
    assert.same({l.path}, (function()
      local t = {}
      for i, x in ipairs(dm.loop.find(dir .. "/a")) do t[i] = x.path end
      return t
    end)())
  end)

  it("attaches with offset, size limit, read-only and autoclear", function()
    local dir = support.tmpdir()
    local f = io.open(dir .. "/b", "wb"); f:write(("\0"):rep(1024 * 1024)); f:close()
    local l = dm.loop.attach(dir .. "/b", {offset = "64KiB", sizelimit = "256KiB", readonly = true, autoclear = true})
    support.defer(function() pcall(l.detach, l) end)
    local info = l:info()
    assert.equal(65536, info.offset)
    assert.equal(262144, info.sizelimit)
    assert.is_true(info.readonly)
    assert.is_true(info.autoclear)
    assert.equal(512, l:sectors())
    assert.is_false(support.writable(l.path))
    l:detach()
    -- gone when the last user lets go: with udev running, its probe may be that user
    for _ = 1, 50 do
      if not dm.loop.open(l.path) then break end
      require("devmapper.core").sleep(0.1)
    end
    assert.is_nil(dm.loop.open(l.path), "autoclear: gone when we let go")
  end)

  it("attaches with direct I/O", function()
    -- tmpfs has no O_DIRECT (the kernel would fall back): stack on a loop
    local under = support.loops(1, "1MiB")
    local l = dm.loop.attach(under.path, {direct_io = true})
    support.defer(function() pcall(l.detach, l) end)
    assert.equal("1", (support.sh("cat /sys/block/loop" .. l.number .. "/loop/dio"):gsub("%s", "")))
    assert.is_true(l:info().direct_io)
  end)

  it("is detached by its scope even after its file was renamed or removed, and a reused one is left", function()
    local dir = support.tmpdir()
    local paths, other
    do
      local scope <close> = dm.scope()
      local a, b = dm.loop.create(dir .. "/gone", "1MiB"), dm.loop.create(dir .. "/moved", "1MiB")
      paths = {a.path, b.path}
      os.remove(dir .. "/gone")
      os.rename(dir .. "/moved", dir .. "/elsewhere")
      -- someone else detaches c and attaches another file to the same device
      local c = dm.loop.create(dir .. "/taken", "1MiB")
      assert.equal(0, select(2, support.sh("losetup -d " .. c.path)))
      local f = io.open(dir .. "/other", "wb"); f:write(("\0"):rep(4096)); f:close()
      other = c.path
      local out, code = support.sh(("losetup %s %s/other"):format(other, dir))
      assert.equal(0, code, out)
    end
    for _, p in ipairs(paths) do assert.is_nil(dm.kernel.call("loop_info", p), p .. " is left attached") end
    local info = dm.kernel.call("loop_info", other)
    support.sh("losetup -d " .. other)
    assert.equal(dir .. "/other", info and info.backing_file, "the other user's loop was detached")
  end)

  it("detaches, and a detached loop has no info", function()
    local dir = support.tmpdir()
    local l = dm.loop.create(dir .. "/d", "1MiB")
    l:detach()
    assert.is_nil(dm.loop.open(l.path))
    os.remove(dir .. "/d")
  end)

  it("refuses an existing file unless asked to reuse it, and reuses it", function()
    local dir = support.tmpdir()
    local l = dm.loop.create(dir .. "/e", "1MiB")
    l:detach()
    local ok, err = pcall(dm.loop.create, dir .. "/e", "1MiB")
    assert.is_false(ok)
    assert.equal(17, err.errno) -- EEXIST
    local again = dm.loop.create(dir .. "/e", "1MiB", {reuse = true})
    support.defer(function() pcall(again.remove, again) end)
    assert.equal(2048, again:sectors())
  end)

  it("names a missing backing file in its error", function()
    local ok, err = pcall(dm.loop.attach, "/nonexistent/file")
    assert.is_false(ok)
    assert.equal("loop.attach", err.op)
    assert.equal(2, err.errno)
    assert.matches("loop.attach '/nonexistent/file': cannot open backing file", tostring(err), 1, true)
  end)

  it("gives every attach its own free device", function()
    local dir = support.tmpdir()
    local files = {}
    for i = 1, 6 do files[i] = dir .. "/p" .. i; io.open(files[i], "wb"):write(("\0"):rep(65536)) end
    local loops = {}
    for i = 1, 6 do loops[i] = dm.loop.attach(files[i]) end
    support.defer(function() for _, l in ipairs(loops) do pcall(l.detach, l) end end)
    local seen = {}
    for _, l in ipairs(loops) do assert.is_nil(seen[l.path]); seen[l.path] = true end
  end)
end)

describe("blockdev #kernel", function()
  it("gives size, block size and major:minor, and finds a loop's backing file", function()
    local l = support.loops(1, "1MiB")
    local f = dm.blockdev(l)
    assert.equal(2048, f.sectors)
    assert.equal(512, f.logical_block_size)
    assert.equal(l.path, f.path)
    assert.equal(l.file, f.loop_backing)
    local g = dm.blockdev(l:devno())
    assert.equal(l.path, g.path)
    assert.equal(l.file, g.loop_backing)
  end)

  it("refuses what is not a block device", function()
    local ok, err = pcall(dm.blockdev, "/etc/passwd")
    assert.is_false(ok)
    assert.matches("not a block device", tostring(err), 1, true)
  end)
end)
