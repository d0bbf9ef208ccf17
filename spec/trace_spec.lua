-- --trace writes a transcript that replays: a bash script that makes the
-- same devices with dmsetup, losetup and keyctl on a fresh kernel.
local dm = require "devmapper"
local support = require "spec.support"
after_each(support.cleanup)

-- Devices and their tables, loops named by their backing files, keyring
-- references kept: what two runs that made the same devices share.
local function world()
  local loops = {}
  for line in support.sh("losetup --list --noheadings --output NAME,MAJ:MIN,BACK-FILE"):gmatch("[^\n]+") do
    local name, devno, file = line:match("^(%S+)%s+(%S+)%s+(%S+)")
    if name then loops[devno] = file:gsub(" %(deleted%)$", "") end
  end
  local devs, numbers = {}, {}
  for _, d in ipairs(dm.list()) do numbers[d.major .. ":" .. d.minor] = d.name end
  for _, d in ipairs(dm.list()) do
    devs[d.name] = support.text(dm.device(d.name):table()):gsub("%d+:%d+", function(n)
      return loops[n] or numbers[n] and "/dev/mapper/" .. numbers[n] or n
    end)
  end
  return devs
end

-- Keys of the sizes the transcript's tables name, one file per description.
local function key_files(transcript, dir)
  local function make(desc, bytes)
    if not support.opens(dir .. "/" .. desc) then
      support.sh(("head -c %d /dev/urandom > %s/%s"):format(bytes, dir, desc))
    end
  end
  for bytes, desc in transcript:gmatch(":(%d+):logon:(devmapper:%x+)") do make(desc, bytes) end
  for desc, bytes in transcript:gmatch("key_hex (devmapper:%x+) (%d+)") do make(desc, bytes) end
end

local function replay(transcript)
  local dir = support.tmpdir()
  support.file(dir .. "/replay.sh", transcript)
  key_files(transcript, dir)
  return support.sh(("DMLUA_KEYS=%s bash %s/replay.sh 2>&1"):format(dir, dir))
end

local function leftovers()
  return {devices = support.names(), loops = support.sh("losetup --list --noheadings"),
          keys = support.sh("keyctl rlist @u 2>/dev/null | wc -w")}
end

describe("--trace transcript", function()
  -- The transcript's lines for operations run through a stand-in kernel,
  -- checked with bash -n: what a hostile name or a failure must not break.
  it("stays a bash script: failed multi-line loads, keys named with %, $ or quotes, device names with spaces", function()
    local kernel, trace = require "devmapper.kernel", require "devmapper.trace"
    local text = {}
    local was_out, was_trace = kernel.out, kernel.trace
    kernel.out, kernel.trace = {write = function(_, ...) text[#text + 1] = table.concat {...} end}, true
    local core = {dm_info = function(name) return {major = 254, minor = #name} end}
    local two = {{start = 0, length = 8, type = "zero", params = ""}, {start = 8, length = 8, type = "error", params = ""}}
    local ok = pcall(function()
      pcall(trace.call, kernel, core, "dm_load", table.pack("x", two), function() error("boom\nline two") end)
      trace.call(kernel, core, "key_add", table.pack("devmapper:50%$`\"\\x"), function() return true end)
      trace.call(kernel, core, "ring_link", table.pack("devmapper:dev:a b", "devmapper:k"), function() return true end)
      trace.call(kernel, core, "dm_create", table.pack("my vol", {{start = 0, length = 8, type = "zero", params = ""}}),
                 function() end)
      trace.call(kernel, core, "dm_create", table.pack("top", {{start = 0, length = 8, type = "linear", params = "254:6 0"}}),
                 function() end)
      trace.call(kernel, core, "luks_open", table.pack("/dev/loop0", "vault", "passphrase", nil, {}), function() end)
    end)
    kernel.out, kernel.trace = was_out, was_trace
    assert.is_true(ok)
    local script = table.concat(text)
    local dir = support.tmpdir()
    support.file(dir .. "/t.sh", script)
    local out, code = support.sh("bash -n " .. dir .. "/t.sh")
    assert.equal(0, code, out .. script)
    assert.matches("# failed: dmsetup load x <<EOF\n# 0 8 zero \n# 8 8 error \n# EOF", script, 1, true)
    assert.matches('D1=$(dmsetup info -c --noheadings -o major,minor --separator : -- "my vol")', script, 1, true)
    assert.matches('dmsetup create top --table "0 8 linear ${D1} 0"', script, 1, true)
    assert.matches("# cryptsetup open --type luks", script, 1, true)
  end)
end)

describe("--trace #kernel", function()
  it("replays a script that leaves its devices up: the same devices and tables", function()
    local dir = support.tmpdir()
    support.file(dir .. "/make.lua", ([[
      local dm = require "devmapper"
      local l1 = dm.loop.create("%s/a.img", "4MiB")
      local l2 = dm.loop.create("%s/b.img", "4MiB")
      local l3 = dm.loop.create("%s/cow.img", "4MiB")
      local base = dm.create("tr-base", dm.table {dm.linear(l1), dm.linear(l2)})
      dm.create("tr-tiger", dm.striped {chunk = 16, l1, l2})
      dm.create("tr-secret", dm.crypt {base, key = dm.key.random(64)})
      dm.create("tr-hex", dm.crypt {l2, key = dm.key.random(32), cipher = "aes-cbc-essiv:sha256", keyring = false,
                                    length = 1024})
      dm.snapshot.take(base, {cow = l3})
      dm.stack {prefix = "tr", top = dm.linear("/dev/mapper/tr-secret", {length = 64})}:apply()
      dm.create("tr-gone", dm.zero(8)):remove()
    ]]):format(dir, dir, dir))
    local before = leftovers()
    local out, code = support.sh(("build/dmlua --trace=%s/trace.sh %s/make.lua 2>&1"):format(dir, dir))
    assert.equal(0, code, out)
    local transcript = assert(io.open(dir .. "/trace.sh")):read("a")
    local made = world()
    assert.truthy(made["tr-base-snap"] and made["tr-top"], "the script made its devices")
    -- nothing of this run's numbers, no key, probes as comments
    for line in transcript:gmatch("[^\n]+") do
      if not line:match("^#") then
        assert.is_nil(line:match("/dev/loop%d"), line)
        assert.is_nil(line:match("[ \"]7:%d+"), line)
        assert.is_nil(line:match("dmsetup info"), line)
      end
    end
    assert.matches("keyctl padd logon devmapper:%x+ \"%$%(ring devmapper:dev:tr%-secret%)\" < \"%$DMLUA_KEYS\"/devmapper:%x+",
                   transcript)
    assert.matches("crypt aes%-cbc%-essiv:sha256 %$%(key_hex devmapper:%x+ 32%)", transcript)
    -- everything down, loops and files gone; then the transcript makes it again
    for _ = 1, 3 do
      for _, d in ipairs(dm.list()) do pcall(function() dm.device(d.name):remove() end) end
    end
    dm.cleanup("tr")
    support.sh(("losetup --list --noheadings --output NAME,BACK-FILE | grep %s | cut -d' ' -f1 | xargs -r -n1 losetup -d; "
                .. "rm -f %s/*.img"):format(dir, dir))
    for name in pairs(made) do support.sh("keyctl unlink %:devmapper:dev:" .. name .. " @u 2>/dev/null") end
    assert.same({}, support.names())
    out = replay(transcript)
    assert.same(made, world(), out)
    for _ = 1, 3 do
      for _, d in ipairs(dm.list()) do pcall(function() dm.device(d.name):remove() end) end
    end
    dm.cleanup("tr")
    support.sh(("losetup --list --noheadings --output NAME,BACK-FILE | grep %s | cut -d' ' -f1 | xargs -r -n1 losetup -d")
               :format(dir))
    for name in pairs(made) do support.sh("keyctl unlink %:devmapper:dev:" .. name .. " @u 2>/dev/null") end
    assert.same(before.devices, support.names())
  end)

  it("replays the article's example from start to end, leaving nothing", function()
    local dir = support.tmpdir()
    local before = leftovers()
    local out, code = support.sh(("build/dmlua --trace=%s/trace.sh examples/article.lua 2>&1"):format(dir))
    assert.equal(0, code, out)
    local transcript = assert(io.open(dir .. "/trace.sh")):read("a")
    assert.same(before, leftovers())
    out = replay(transcript)
    assert.same(before, leftovers(), out)
    -- every change the article made is in it: creates, reloads, suspends, resumes, removes, files
    for _, w in ipairs {"dmsetup create base ", "dmsetup load base ", "dmsetup suspend base", "dmsetup resume base",
                        "dmsetup remove --retry base", "snapshot-merge", "rm -f /tmp/store1", "losetup --detach"} do
      assert.matches(w, transcript, 1, true)
    end
  end)
end)
