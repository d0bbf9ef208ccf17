-- dm-crypt: validation on the host; interop, keyring and key residue on the kernel.
local dm = require "devmapper"
local support = require "spec.support"
local refused = support.refused
after_each(support.cleanup)

describe("crypt target", function()
  local k64 = dm.key.random(64)

  it("formats with a keyring reference by default, never the key", function()
    local t = dm.table {dm.crypt {"7:0", key = k64, length = 4096}}
    local text = tostring(t)
    assert.matches("^0 4096 crypt aes%-xts%-plain64 :64:logon:devmapper:%x+ 0 7:0 0$", text)
    assert.is_nil(text:find(k64:hex(), 1, true))
  end)

  it("names the keyring entry after the key: the same key, the same table text", function()
    local function text(k) return tostring(dm.table {dm.crypt {"7:0", key = k, length = 8}}) end
    assert.equal(text(k64), text(dm.key.from_hex(k64:hex())))
    assert.not_equal(text(k64), text(dm.key.random(64)))
    assert.matches(":64:logon:devmapper:" .. ("%x"):rep(32) .. " ", text(k64))
  end)

  it("shows a hex-mode key as zeros, as dmsetup does", function()
    local t = dm.table {dm.crypt {"7:0", key = k64, keyring = false, length = 8, options = {"allow_discards"}}}
    assert.equal("0 8 crypt aes-xts-plain64 " .. ("0"):rep(128) .. " 0 7:0 0 1 allow_discards", tostring(t))
  end)

  it("round-trips dmsetup table text", function()
    for _, text in ipairs {
      "0 4096 crypt aes-xts-plain64 :64:logon:devmapper:abc 0 7:0 0",
      "0 4096 crypt aes-cbc-essiv:sha256 " .. ("0"):rep(64) .. " 0 7:1 2048 2 allow_discards sector_size:4096",
    } do
      assert.equal(text, tostring(dm.table.parse(text)))
    end
  end)

  it("refuses bad cipher specs, key sizes, sector sizes and options before the kernel", function()
    local function v(o) o[1] = o[1] or "7:0"; o.length = o.length or 4096; dm.table {dm.crypt(o)}:validate() end
    refused(function() v {key = k64, cipher = "aes-xts"} end, "field 'cipher' chain mode (a word not shown: it may be a key) needs an IV mode")
    refused(function() v {key = k64, cipher = "aes-xts-bogusiv"} end, "field 'cipher' unknown IV mode (a word not shown")
    refused(function() v {key = k64, cipher = "aes:3-xts-plain64"} end, "the key count after ':' must be a power of 2")
    refused(function() v {key = k64, cipher = "aes-cbc-essiv"} end, "essiv needs its hash")
    refused(function() v {key = k64, cipher = "aes"} end, "field 'key' must be 16, 24, 32 bytes for aes (it is 64)")
    refused(function() v {key = dm.key.random(16), cipher = "aes-xts-plain64"} end,
            "field 'key' must be 32, 48, 64 bytes for aes-xts-plain64 (it is 16)")
    refused(function() v {key = k64, cipher = "aes-cbc-essiv:sha256"} end,
            "field 'key' must be 16, 24, 32 bytes for aes-cbc-essiv:sha256 (it is 64)")
    refused(function() v {key = "00112233"} end, "field 'key' must be a dm.key object")
    refused(function() v {key = k64, sector_size = 1000} end, "field 'options' option 'sector_size' must be a power of 2")
    refused(function() v {key = k64, sector_size = 8192} end, "option 'sector_size' must be at most 4096")
    refused(function() v {key = k64, sector_size = 4096, length = 4092} end,
            "field 'length' 4092 must be a multiple of sector_size (8 sectors)")
    refused(function() v {key = k64, sector_size = 4096, iv_offset = 4} end, "field 'iv_offset' 4 must be a multiple")
    refused(function() v {key = k64, options = {"fast_please"}} end, "field 'options' unknown option (a word not shown")
    refused(function() dm.key.from_hex("abc") end, "odd")
  end)

  it("accepts the article's aes-plain, with a warning", function()
    local said, stderr = {}, io.stderr
    io.stderr = {write = function(self, ...) said[#said + 1] = table.concat {...} return self end}
    local ok, t = pcall(dm.table, {dm.crypt {"7:0", key = dm.key.random(16), cipher = "aes-plain", length = 8}})
    io.stderr = stderr
    assert(ok, t)
    assert.matches("^0 8 crypt aes%-plain :16:logon:", tostring(t))
    assert.matches("warning: cipher 'aes%-plain' .* repeats its IV beyond 2 TiB", table.concat(said))
  end)
end)

describe("crypt #kernel", function()
  -- keyctl as the oracle: an invalidated key is no longer found
  local function keyring_has(desc)
    local _, code = support.sh("keyctl search @u logon " .. desc)
    return code == 0
  end

  it("encrypts: the backing file holds no plaintext, a wrong key reads garbage", function()
    local l1 = support.loops(1, "4MiB")
    local key = dm.key.random(64)
    local dev = support.device("spec-crypt", dm.crypt {l1, key = key})
    local secret = ("plaintext-%d|"):format(os.time()):rep(100)
    support.write(dev.path, 4096, secret)
    assert.equal(secret, support.read(dev.path, 4096, #secret))
    local raw = support.read(l1.file, 0, 4 * 1024 * 1024)
    assert.is_nil(raw:find("plaintext-", 1, true))
    dev:remove()
    local wrong = support.device("spec-crypt-wrong", dm.crypt {l1, key = dm.key.random(64)})
    assert.not_equal(secret, support.read(wrong.path, 4096, #secret))
    wrong:remove()
    local again = support.device("spec-crypt-again", dm.crypt {l1, key = key})
    assert.equal(secret, support.read(again.path, 4096, #secret), "reopened with the same key")
  end)

  it("shares one keyring entry among devices with the same key, unlinked with the last", function()
    local l1, l2 = support.loops(2, "1MiB")
    local key = dm.key.random(64)
    local a = support.device("spec-crypt-a", dm.crypt {l1, key = key})
    local b = support.device("spec-crypt-b", dm.crypt {l2, key = dm.key.from_hex(key:hex())})
    local desc = support.dmsetup("table spec-crypt-a"):match(":64:logon:(devmapper:%x+)")
    assert.equal(desc, support.dmsetup("table spec-crypt-b"):match(":64:logon:(devmapper:%x+)"))
    a:remove()
    assert.is_true(keyring_has(desc), "b still uses it")
    -- a reload with another key drops the old one
    b:reload(dm.crypt {l2, key = dm.key.random(64)})
    local new = support.dmsetup("table spec-crypt-b"):match(":64:logon:(devmapper:%x+)")
    assert.not_equal(desc, new)
    assert.is_false(keyring_has(desc))
    assert.is_true(keyring_has(new))
    b:remove()
    assert.is_false(keyring_has(new))
  end)

  it("puts only a keyring reference in the kernel's table, and unlinks it at remove", function()
    local l1 = support.loops(1, "1MiB")
    local key = dm.key.random(64)
    local dev = support.device("spec-crypt-kr", dm.crypt {l1, key = key})
    local shown = support.dmsetup("table --showkeys spec-crypt-kr")
    local desc = shown:match(":64:logon:(devmapper:%x+)")
    assert.truthy(desc, shown)
    assert.is_nil(shown:find(key:hex(), 1, true))
    assert.is_true(keyring_has(desc))
    dev:remove()
    assert.is_false(keyring_has(desc))
  end)

  it("masks a hex key in dev:table() as dmsetup does, and the key never reaches output", function()
    local l1 = support.loops(1, "1MiB")
    local key = dm.key.random(32)
    local dev = support.device("spec-crypt-hex", dm.crypt {l1, key = key, cipher = "aes-cbc-essiv:sha256", keyring = false})
    local ours = support.text(dev:table())
    assert.equal(support.dmsetup("table spec-crypt-hex"), ours)
    assert.matches(" " .. ("0"):rep(64) .. " ", ours)
    assert.is_true(support.table_holds_key("spec-crypt-hex", key), "spec-crypt-hex does not hold its key")
  end)

  it("opens what cryptsetup --type plain wrote, and the reverse", function()
    local l1 = support.loops(1, "2MiB")
    local pass = "correct horse battery staple"
    -- a passphrase piped in (a key file would skip the hash in plain mode)
    local open = ("printf '%%s\\n' '%s' | DM_DISABLE_UDEV=1 cryptsetup open --type plain --cipher aes-xts-plain64 "
                  .. "--key-size 512 --hash sha256 %s spec-cs-plain"):format(pass, l1.path)
    local out, code = support.sh(open)
    assert.equal(0, code, out)
    -- the oracle's own key (test-only export) is the one we derive
    local key = dm.key.plain(pass, {hash = "sha256", size = 64})
    assert.is_true(support.table_holds_key("spec-cs-plain", key), "spec-cs-plain does not hold its key")
    support.write("/dev/mapper/spec-cs-plain", 0, "written by cryptsetup")
    support.sh("DM_DISABLE_UDEV=1 cryptsetup close spec-cs-plain")
    local dev = support.device("spec-plain", dm.crypt {l1, key = key})
    assert.equal("written by cryptsetup", support.read(dev.path, 0, 21))
    support.write(dev.path, 512, "written by lua-devmapper")
    dev:remove()
    out, code = support.sh(open)
    assert.equal(0, code, out)
    support.defer(function() support.sh("DM_DISABLE_UDEV=1 cryptsetup close spec-cs-plain") end)
    assert.equal("written by lua-devmapper", support.read("/dev/mapper/spec-cs-plain", 512, 24))
  end)

  it("derives the key cryptsetup --type plain derives with every hash it offers", function()
    local l1 = support.loops(1, "1MiB")
    for _, hash in ipairs {"whirlpool", "sha3-256", "sm3", "ripemd160", "sha256:20", "plain"} do
      local open = ("printf '%%s' 'a passphrase of 32 bytes or more!' | DM_DISABLE_UDEV=1 cryptsetup open --type plain "
                    .. "--cipher aes-cbc-essiv:sha256 --key-size 256 --hash %s %s spec-cs-hash"):format(hash, l1.path)
      local out, code = support.sh(open)
      assert.equal(0, code, out)
      local key = dm.key.plain("a passphrase of 32 bytes or more!", {hash = hash, size = 32})
      local holds = support.table_holds_key("spec-cs-hash", key)
      support.sh("DM_DISABLE_UDEV=1 cryptsetup close spec-cs-hash")
      assert.is_true(holds, hash)
    end
  end)

  it("leaves no slice of a wiped key in a core dump of the process", function()
    -- As lvm2's dmsecuretest: a child reads a key file into locked memory,
    -- makes and removes crypt devices (hex and keyring), makes one more,
    -- closes the key; a core dump of it then holds no 8-byte slice of the
    -- key, raw or hex. (libdevmapper wipes a table load's ioctl buffer only
    -- as far as the kernel's answer, its header: the module has freed
    -- buffers overwritten while a secure task runs.)
    local dir = support.tmpdir()
    local urandom = io.open("/dev/urandom", "rb")
    local raw = urandom:read(64)
    urandom:close()
    local hex = raw:gsub(".", function(c) return ("%02x"):format(c:byte()) end)
    local kf = io.open(dir .. "/key", "wb"); kf:write(raw); kf:close()
    local img = io.open(dir .. "/img", "wb"); img:write(("\0"):rep(1024 * 1024)); img:close()
    local script = dir .. "/residue.lua"
    local f = io.open(script, "w")
    f:write(([[
      local dm = require "devmapper"
      local l = dm.loop.attach(%q)
      local key = dm.key.read(%q)
      os.remove(%q)
      dm.create("spec-residue", dm.crypt {l, key = key, keyring = false}):remove()
      dm.create("spec-residue2", dm.crypt {l, key = key}):remove()
      -- the last operation a hex key's table load: nothing reuses its freed ioctl buffer
      dm.create("spec-residue3", dm.crypt {l, key = key, keyring = false})
      l:detach()
      key:close()
      collectgarbage() collectgarbage()
      io.stdout:write("ready\n") io.stdout:flush()
      io.read("l")                           -- wait while the test takes a core dump
    ]]):format(dir .. "/img", dir .. "/key", dir .. "/key"))
    f:close()
    support.defer(function() pcall(function() dm.device("spec-residue3"):remove() end) end)
    local dump = support.core_dump(dir, script)
    for i = 1, #hex - 7 do
      assert.is_nil(dump:find(hex:sub(i, i + 7), 1, true), "hex slice at " .. i)
    end
    for i = 1, #raw - 7 do
      assert.is_nil(dump:find(raw:sub(i, i + 7), 1, true), "raw slice at " .. i)
    end
  end)
end)
