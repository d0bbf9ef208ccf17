-- LUKS through libcryptsetup: options refused on the host; on the kernel,
-- the cryptsetup command as the oracle both ways, LUKS1 and LUKS2.
local dm = require "devmapper"
local support = require "spec.support"
local refused = support.refused
after_each(support.cleanup)

-- fixed, cheap key derivation: the point here is the format, not the cost
local FAST = {type = "pbkdf2", iterations = 1000}
local CS_FAST = "--pbkdf pbkdf2 --pbkdf-force-iterations 1000"

-- a passphrase file, and the Key read from it (as cryptsetup --key-file reads it)
local function passphrase(text)
  local path = support.tmpdir() .. "/pass"
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return dm.key.read(path), path
end

describe("luks options", function()
  local k = dm.key.random(16)

  it("are checked before libcryptsetup sees them, naming the field and the rule", function()
    local function format(o)
      o.passphrase = o.passphrase == nil and k or o.passphrase
      return function() dm.luks.format("/dev/null-luks-spec", o) end
    end
    refused(format {passphrase = false}, "field 'passphrase' must be a dm.key object")
    refused(format {passphrase = "secret"}, "field 'passphrase' must be a dm.key object")
    refused(format {version = 3}, "field 'version' must be 1 or 2")
    refused(format {cipher = "aes"}, "field 'cipher' must be <cipher>-<mode>")
    refused(format {key_size = 7}, "field 'key_size' must be an integer from 16 to 512")
    refused(format {volume_key = dm.key.random(32), key_size = 64}, "is not the volume key's size (32)")
    refused(format {sector_size = 1000}, "field 'sector_size' must be a power of 2")
    refused(format {sector_size = 8192}, "field 'sector_size' must be an integer from 512 to 4096")
    refused(format {version = 1, sector_size = 4096}, "field 'sector_size' must be 512 for LUKS1")
    refused(format {version = 1, pbkdf = {type = "argon2id"}}, "must be pbkdf2 for LUKS1")
    refused(format {version = 1, label = "x"}, "field 'label' is for LUKS2 only")
    refused(format {label = ("x"):rep(48)}, "field 'label' must be a string of at most 47 bytes")
    refused(format {pbkdf = {type = "scrypt"}}, "field 'pbkdf.type' must be argon2id, argon2i or pbkdf2")
    refused(format {pbkdf = {type = "pbkdf2", memory = 1024}}, "are for argon2 only")
    refused(format {pbkdf = {time = 1, iterations = 5000}}, "exclude each other")
    refused(format {pbkdf = {iterations = 1}}, "field 'pbkdf.iterations' must be an integer from 4")
    refused(format {uuid = "not-a-uuid"}, "field 'uuid' must be a UUID")
    refused(format {cipher_mode = "xts"}, "field 'cipher_mode' is not an option")
    refused(function() dm.luks.open("/dev/null-luks-spec", "x", {}) end, "exactly one of the fields 'passphrase'")
    refused(function() dm.luks.open("/dev/null-luks-spec", "x", {passphrase = k, volume_key = k}) end, "exactly one")
    refused(function() dm.luks.open("/dev/null-luks-spec", "a/b", {passphrase = k}) end, "must not contain '/'")
    refused(function() dm.luks.open("/dev/null-luks-spec", "x", {passphrase = k, readonly = 1}) end,
            "field 'readonly' must be a boolean")
    refused(function() dm.luks.kill_slot("/dev/null-luks-spec", 32) end, "field 'slot' must be an integer from 0 to 31")
    refused(function() dm.luks.remove_key("/dev/null-luks-spec", "pw") end, "field 'passphrase' must be a dm.key object")
  end)

  it("shows the cryptsetup command in a dry run, with no passphrase", function()
    local out = support.dry(function()
      dm.luks.format("/dev/loop7", {passphrase = k, pbkdf = FAST})
      dm.luks.open("/dev/loop7", "vault", {passphrase = k, readonly = true})
      dm.luks.close("vault")
    end)
    assert.matches("cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 "
                   .. "--key-file <passphrase> /dev/loop7", out, 1, true)
    assert.matches("cryptsetup open --type luks --readonly --key-file <passphrase> /dev/loop7 vault", out, 1, true)
    assert.matches("cryptsetup close vault", out, 1, true)
  end)
end)

describe("luks #kernel", function()
  local function data_through(path, text)
    support.write(path, 4096, text)
    return support.read(path, 4096, #text)
  end

  for _, version in ipairs {1, 2} do
    it(("formats LUKS%d that cryptsetup opens, and opens what cryptsetup formats"):format(version), function()
      local l1, l2 = support.loops(2, "32MiB")
      local key, path = passphrase("correct horse " .. version)
      local made = dm.luks.format(l1, {version = version, passphrase = key, pbkdf = FAST})
      assert.equal(0, made.slot)
      assert.equal(made.uuid, (support.sh("cryptsetup luksUUID " .. l1.path):gsub("%s+$", "")))
      local dump = support.sh("cryptsetup luksDump " .. l1.path)
      assert.matches("Version:%s+" .. version, dump)
      -- cryptsetup opens ours; data written through it reads back through ours
      local out, code = support.sh(("cryptsetup open --type luks --key-file %s %s spec-cs"):format(path, l1.path))
      assert.equal(0, code, out)
      assert.equal("written by cryptsetup", data_through("/dev/mapper/spec-cs", "written by cryptsetup"))
      assert.equal(0, select(2, support.sh("cryptsetup close spec-cs")))
      local dev = dm.luks.open(l1, "spec-lk", {passphrase = key})
      support.defer(function() pcall(dm.luks.close, "spec-lk") end)
      assert.equal(0, dev.slot)
      assert.equal("written by cryptsetup", support.read(dev.path, 4096, 21))
      assert.matches("^0 %d+ crypt aes%-xts%-plain64 ", support.text(dev:table()))
      dm.luks.close(dev)
      assert.same({}, support.names())
      -- cryptsetup formats, we open (passphrase from a key file), data back the other way
      out, code = support.sh(("cryptsetup luksFormat -q --type luks%d %s --key-file %s %s")
                             :format(version, CS_FAST, path, l2.path))
      assert.equal(0, code, out)
      assert.is_true(dm.luks.is_luks(l2))
      local info = dm.luks.info(l2)
      assert.equal(version, info.version)
      assert.equal("aes", info.cipher)
      assert.equal("xts-plain64", info.mode)
      assert.equal(0, info.keyslots[1].slot)
      assert.equal("pbkdf2", info.keyslots[1].pbkdf)
      dev = dm.luks.open(l2, "spec-lk2", {keyfile = path})
      support.defer(function() pcall(dm.luks.close, "spec-lk2") end)
      assert.equal("written by us", data_through(dev.path, "written by us"))
      dm.luks.close("spec-lk2")
      out, code = support.sh(("cryptsetup open --key-file %s %s spec-cs2"):format(path, l2.path))
      assert.equal(0, code, out)
      assert.equal("written by us", support.read("/dev/mapper/spec-cs2", 4096, 13))
      support.sh("cryptsetup close spec-cs2")
    end)
  end

  it("opens with the volume key it was made with, and refuses a wrong one as a wrong key", function()
    local l1 = support.loops(1, "32MiB")
    local key = passphrase("pw")
    local vk = dm.key.random(64)
    dm.luks.format(l1, {passphrase = key, volume_key = vk, pbkdf = FAST, label = "spec", subsystem = "lua"})
    local info = dm.luks.info(l1)
    assert.equal("spec", info.label)
    assert.equal("lua", info.subsystem)
    assert.same({}, info.tokens)
    -- a token cryptsetup adds is listed, with its definition
    local out, code = support.sh("cryptsetup token add --key-description spec:token --key-slot 0 " .. l1.path)
    assert.equal(0, code, out)
    local tokens = dm.luks.info(l1).tokens
    assert.equal(1, #tokens)
    assert.same({0, "luks2-keyring"}, {tokens[1].token, tokens[1].type})
    assert.matches('"key_description":"spec:token"', tokens[1].json:gsub("%s", ""), 1, true)
    local dev = dm.luks.open(l1, "spec-vk", {volume_key = vk})
    assert.is_nil(dev.slot)
    dm.luks.close(dev)
    local ok, err = pcall(dm.luks.open, l1, "spec-vk", {volume_key = dm.key.random(64)})
    assert.is_false(ok)
    assert.is_true(err.wrong_key)
    assert.same({}, support.names())
  end)

  it("refuses a wrong passphrase as its own error, leaves nothing, and opens after it", function()
    local l1 = support.loops(1, "32MiB")
    local key = passphrase("right")
    dm.luks.format(l1, {passphrase = key, pbkdf = FAST})
    local wrong = passphrase("wrong")
    local ok, err = pcall(dm.luks.open, l1, "spec-wrong", {passphrase = wrong})
    assert.is_false(ok)
    assert.is_true(err.wrong_key)
    assert.equal(1, err.errno)
    assert.equal("luks.open", err.op)
    assert.same({}, support.names())
    -- the same open twice: the second is refused and the first stays
    local dev = dm.luks.open(l1, "spec-wrong", {passphrase = key})
    support.defer(function() pcall(dm.luks.close, "spec-wrong") end)
    ok, err = pcall(dm.luks.open, l1, "spec-wrong", {passphrase = key})
    assert.is_false(ok)
    assert.is_nil(err.wrong_key)
    assert.same({"spec-wrong"}, support.names())
    assert.is_truthy(dev:info())
    dm.luks.close(dev)
    assert.same({}, support.names())
  end)

  it("adds, changes, removes and kills key slots as cryptsetup sees them", function()
    local l1 = support.loops(1, "32MiB")
    local one, p1 = passphrase("one")
    local two, p2 = passphrase("two")
    local three, p3 = passphrase("three")
    local function opens(path)
      return select(2, support.sh(("cryptsetup open --test-passphrase --key-file %s %s"):format(path, l1.path))) == 0
    end
    dm.luks.format(l1, {passphrase = one, pbkdf = FAST})
    assert.equal(3, dm.luks.add_key(l1, {passphrase = one, new = two, slot = 3, pbkdf = FAST}))
    assert.is_true(opens(p1) and opens(p2))
    assert.is_false(opens(p3))
    local ok, err = pcall(dm.luks.add_key, l1, {passphrase = three, new = three, pbkdf = FAST})
    assert.is_false(ok)
    assert.is_true(err.wrong_key)
    dm.luks.change_key(l1, {passphrase = two, new = three, pbkdf = FAST})
    assert.is_false(opens(p2))
    assert.is_true(opens(p3))
    assert.equal(0, dm.luks.remove_key(l1, one))
    assert.is_false(opens(p1))
    local slots = dm.luks.info(l1).keyslots
    assert.equal(1, #slots)
    refused(function() dm.luks.kill_slot(l1, slots[1].slot) end, "this is the last key slot")
    refused(function() dm.luks.remove_key(l1, three) end, "this is the last key slot")
    assert.is_true(opens(p3))
    dm.luks.kill_slot(l1, slots[1].slot, {force = true})
    assert.is_false(opens(p3))
    assert.same({}, dm.luks.info(l1).keyslots)
  end)

  it("backs up a header cryptsetup restores, and restores one cryptsetup saved", function()
    local l1 = support.loops(1, "32MiB")
    local dir = support.tmpdir()
    local one, p1 = passphrase("before")
    local two, p2 = passphrase("after")
    local function opens(path)
      return select(2, support.sh(("cryptsetup open --test-passphrase --key-file %s %s"):format(path, l1.path))) == 0
    end
    dm.luks.format(l1, {passphrase = one, pbkdf = FAST})
    dm.luks.header_backup(l1, dir .. "/ours.img")
    local out, code = support.sh(("cryptsetup luksHeaderBackup %s --header-backup-file %s/theirs.img"):format(l1.path, dir))
    assert.equal(0, code, out)
    dm.luks.change_key(l1, {passphrase = one, new = two, pbkdf = FAST})
    assert.is_true(opens(p2) and not opens(p1))
    out, code = support.sh(("cryptsetup luksHeaderRestore -q %s --header-backup-file %s/ours.img"):format(l1.path, dir))
    assert.equal(0, code, out)
    assert.is_true(opens(p1) and not opens(p2))
    dm.luks.change_key(l1, {passphrase = one, new = two, pbkdf = FAST})
    refused(function() dm.luks.header_restore(l1, dir .. "/theirs.img") end, "give {force = true}")
    assert.is_true(opens(p2))
    dm.luks.header_restore(l1, dir .. "/theirs.img", {force = true})
    assert.is_true(opens(p1) and not opens(p2))
    local ok, err = pcall(dm.luks.header_backup, l1, dir .. "/ours.img")
    assert.is_false(ok, "an existing file is not overwritten")
    assert.equal("luks.header_backup", err.op)
  end)

  it("is a stack member: applied from its header, re-applied as a no-op, torn down and cleaned up", function()
    local l1 = support.loops(1, "32MiB")
    local key, path = passphrase("stacked")
    local out, code = support.sh(("cryptsetup luksFormat -q --type luks2 %s --key-file %s %s"):format(CS_FAST, path, l1.path))
    assert.equal(0, code, out)
    out, code = support.sh(("cryptsetup open --key-file %s %s spec-cs3"):format(path, l1.path))
    assert.equal(0, code, out)
    support.write("/dev/mapper/spec-cs3", 0, "under the stack")
    local want = support.dmsetup("table spec-cs3"):match("^0 (%d+) crypt aes%-xts%-plain64 ")
    support.sh("cryptsetup close spec-cs3")
    -- a slice of the loop, the LUKS volume on it, and a linear over that
    local s = dm.stack {prefix = "spec_lk", base = dm.linear(l1), vault = dm.luks {"base", passphrase = key},
                        top = dm.linear("vault", {length = 8})}
    support.defer(function() pcall(dm.cleanup, "spec_lk") end)
    -- before the first apply there is no header to read: the plan shows the member as itself
    local first = s:plan()
    assert.equal(3, #first)
    for _, step in ipairs(first) do assert.equal("create", step.op, step.name) end
    assert.matches("spec_lk%-vault .*luks /dev/mapper/spec_lk%-base", tostring(first))
    assert.matches("luks", support.dry(function() s:apply() end))
    assert.same({}, support.names())
    s:apply()
    assert.equal("under the stack", support.read("/dev/mapper/spec_lk-top", 0, 15))
    local vault = s:device("vault")
    assert.matches("^0 " .. want .. " crypt aes%-xts%-plain64 :64:logon:devmapper:%x+ 0 %d+:%d+ 32768$",
                   support.text(vault:table()))
    -- nothing to do the second time: every member kept
    local plan = s:plan()
    assert.equal(3, #plan)
    for _, step in ipairs(plan) do assert.equal("keep", step.op, step.name) end
    s:apply()
    s:teardown()
    assert.same({}, support.names())
    assert.same({}, require("devmapper.core").rings("devmapper:dev:spec_lk-"))
    -- a crash after apply: cleanup removes it all
    s:apply()
    assert.same({"spec_lk-base", "spec_lk-top", "spec_lk-vault"}, dm.cleanup("spec_lk"))
    assert.same({}, support.names())
    -- a wrong passphrase stops the apply before anything of the volume is made, and undoes the rest
    local bad = dm.stack {prefix = "spec_lk", base = dm.linear(l1), vault = dm.luks {"base", passphrase = passphrase("no")}}
    local ok, err = pcall(bad.apply, bad)
    assert.is_false(ok)
    assert.matches("no key slot opens with this passphrase", tostring(err))
    assert.same({}, support.names())
  end)

  it("as a member: a volume key, discards, the header's flags, and a re-made header unlocked anew", function()
    local l1 = support.loops(1, "32MiB")
    local key = passphrase("first")
    local vk = dm.key.random(64)
    local made = dm.luks.format(l1, {passphrase = key, volume_key = vk, pbkdf = FAST})
    local s = dm.stack {prefix = "spec_lv", vault = dm.luks {l1, volume_key = vk, discards = true}}
    support.defer(function() pcall(dm.cleanup, "spec_lv") end)
    s:apply()
    assert.matches(" 1 allow_discards$", support.text(s:device("vault"):table()))
    support.write("/dev/mapper/spec_lv-vault", 0, "old key")
    s:teardown()
    -- the header's persistent flags come with it, as cryptsetup open applies them
    local kf = support.tmpdir() .. "/pass"
    local f = io.open(kf, "wb"); f:write("first"); f:close()
    local out, code = support.sh(("cryptsetup open --persistent --perf-no_read_workqueue --key-file %s %s spec-cs4")
                                 :format(kf, l1.path))
    assert.equal(0, code, out)
    support.sh("cryptsetup close spec-cs4")
    -- the same UUID, a new volume key: the passphrase member unlocks it anew and reloads
    local p = dm.stack {prefix = "spec_lv", vault = dm.luks {l1, passphrase = key}}
    p:apply()
    local old = support.text(p:device("vault"):table())
    assert.matches(" 1 no_read_workqueue$", old)
    assert.equal("old key", support.read("/dev/mapper/spec_lv-vault", 0, 7))
    p:teardown()
    dm.luks.format(l1, {passphrase = key, uuid = made.uuid, pbkdf = FAST})
    assert.equal(made.uuid, dm.luks.info(l1).uuid)
    p:apply()
    assert.not_equal(old, support.text(p:device("vault"):table()))
    assert.not_equal("old key", support.read("/dev/mapper/spec_lv-vault", 0, 7))
    p:teardown()
  end)

  it("takes partial key derivation settings, libcryptsetup's defaults filling in the rest", function()
    local l1 = support.loops(1, "32MiB")
    local key = passphrase("partial")
    dm.luks.format(l1, {passphrase = key, pbkdf = {type = "pbkdf2", hash = "sha512", time = 0.1}})
    local slot = dm.luks.info(l1).keyslots[1]
    assert.equal("pbkdf2", slot.pbkdf)
    assert.equal("sha512", slot.hash)
    assert.truthy(slot.iterations >= 1000)
    dm.luks.add_key(l1, {passphrase = key, new = passphrase("argon"), pbkdf = {type = "argon2id", time = 0.1, memory = 32768}})
    slot = dm.luks.info(l1).keyslots[2]
    assert.equal("argon2id", slot.pbkdf)
    assert.equal(32768, slot.memory)
  end)

  it("refuses to format a device that is in use, and writes no header", function()
    local l1 = support.loops(1, "32MiB")
    support.device("spec-holder", dm.linear(l1))
    local ok, err = pcall(dm.luks.format, l1, {passphrase = passphrase("x"), pbkdf = FAST})
    assert.is_false(ok)
    assert.equal("luks.format", err.op)
    assert.is_false(dm.luks.is_luks(l1))
  end)

  it("closes what a scope opened, and says 'not LUKS' for a blank device", function()
    local l1, l2 = support.loops(2, "32MiB")
    local key = passphrase("scoped")
    dm.luks.format(l1, {passphrase = key, pbkdf = FAST})
    do
      local scope <close> = dm.scope()
      dm.luks.open(l1, "spec-scoped", {passphrase = key, readonly = true})
      assert.is_true(dm.device("spec-scoped"):info().readonly)
    end
    assert.same({}, support.names())
    assert.is_false(dm.luks.is_luks(l2))
    local ok, err = pcall(dm.luks.info, l2)
    assert.is_false(ok)
    assert.matches("not a LUKS volume", tostring(err))
  end)

  it("leaves no slice of a passphrase or volume key in a core dump of the process", function()
    -- as crypt_spec's residue test: a child formats, opens, writes, closes,
    -- adds and removes a slot, closes its Keys; its core dump then holds no
    -- 8-byte slice of either secret, raw or hex.
    local dir = support.tmpdir()
    local urandom = io.open("/dev/urandom", "rb")
    local pass, vk = urandom:read(32):gsub("[%z\n]", "x"), urandom:read(64)
    urandom:close()
    local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
    for name, bytes in pairs {pass = pass, vk = vk} do
      local f = io.open(dir .. "/" .. name, "wb"); f:write(bytes); f:close()
    end
    local l1 = support.loops(1, "32MiB")
    local script = dir .. "/residue.lua"
    local f = io.open(script, "w")
    f:write(([[
      local dm = require "devmapper"
      local pass, vk = dm.key.read(%q), dm.key.read(%q)
      os.remove(%q) os.remove(%q)
      local fast = {type = "pbkdf2", iterations = 1000}
      dm.luks.format(%q, {passphrase = pass, volume_key = vk, pbkdf = fast})
      local d = dm.luks.open(%q, "spec-luks-residue", {passphrase = pass})
      local w = io.open(d.path, "r+b") w:write(("secret data"):rep(100)) w:close()
      dm.luks.close(d)
      local two = dm.key.random(32)
      dm.luks.add_key(%q, {passphrase = pass, new = two, pbkdf = fast})
      dm.luks.remove_key(%q, two)
      dm.luks.close(dm.luks.open(%q, "spec-luks-residue", {volume_key = vk}))
      pass:close() vk:close() two:close()
      collectgarbage() collectgarbage()
      io.stdout:write("ready\n") io.stdout:flush()
      io.read("l")                           -- wait while the test takes a core dump
    ]]):format(dir .. "/pass", dir .. "/vk", dir .. "/pass", dir .. "/vk", l1.path, l1.path, l1.path, l1.path, l1.path))
    f:close()
    local dump = support.core_dump(dir, script)
    for name, secret in pairs {pass = pass, vk = vk} do
      for _, form in ipairs {secret, hex(secret)} do
        for i = 1, #form - 7 do
          assert.is_nil(dump:find(form:sub(i, i + 7), 1, true), ("a slice of the %s at %d"):format(name, i))
        end
      end
    end
  end)
end)
