-- A LUKS2 volume the rest of the system can open (cryptsetup open, systemd's
-- crypttab, a desktop's disk tool), made without a shell: format, open, make
-- a filesystem and put a file on it, close; add a second passphrase, reopen
-- with it, read the file back; then retire the first passphrase.
-- The passphrases come from key files here (as `--key-file`); interactively,
-- dm.key.prompt("Passphrase: ", {verify = true}) reads one from the terminal.
-- Usage: dmlua examples/luks.lua [dir]
local dm = require "devmapper"
local dir = arg and arg[1] or os.getenv("TMPDIR") or "/tmp"

local function sh(fmt, ...)
  local cmd = fmt:format(...)
  assert(os.execute(cmd), "failed: " .. cmd)
end

-- a passphrase file for the example (a real script gets it from its user)
local function passphrase_file(name, text)
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

do
  local scope <close> = dm.scope()
  local disk = dm.loop.create(dir .. "/luks.img", "64MiB")
  local first <close> = dm.key.read(passphrase_file("first.pass", "correct horse battery staple"))
  local second <close> = dm.key.read(passphrase_file("second.pass", "tr0ub4dor&3"))
  local mnt = dir .. "/luks.mnt"
  local unmount <close> = setmetatable({}, {__close = function() os.execute("umount " .. mnt .. " 2>/dev/null") end})

  -- cryptsetup luksFormat --type luks2 /dev/loopN   (cheap PBKDF2 for the demo: a
  -- real volume keeps the argon2id default, about 2 s of work per open)
  local made = dm.luks.format(disk, {passphrase = first, label = "example", pbkdf = {type = "pbkdf2", iterations = 1000}})
  print(("formatted: LUKS2, uuid %s, slot %d"):format(made.uuid, made.slot))

  -- cryptsetup open /dev/loopN vault; mkfs.ext4; mount; write a file; umount; cryptsetup close vault
  local vault = dm.luks.open(disk, "vault", {passphrase = first})
  print("opened:    " .. tostring(vault:table()))     -- the volume key is a keyring reference
  sh("mkfs.ext4 -q %s && mkdir -p %s && mount %s %s", vault.path, mnt, vault.path, mnt)
  local f = assert(io.open(mnt .. "/note.txt", "w"))
  f:write("meet me at the usual place\n")
  f:close()
  sh("umount %s", mnt)
  dm.luks.close(vault)

  -- cryptsetup luksAddKey /dev/loopN; open with the new one
  local slot = dm.luks.add_key(disk, {passphrase = first, new = second, pbkdf = {type = "pbkdf2", iterations = 1000}})
  print(("added:     slot %d"):format(slot))
  vault = dm.luks.open(disk, "vault", {passphrase = second})
  sh("mount -o ro %s %s", vault.path, mnt)
  f = assert(io.open(mnt .. "/note.txt"))
  print("read back: " .. f:read("l"))
  f:close()
  sh("umount %s", mnt)
  dm.luks.close(vault)

  -- cryptsetup luksRemoveKey: the first passphrase no longer opens it
  print(("removed:   slot %d"):format(dm.luks.remove_key(disk, first)))
  local ok, err = pcall(dm.luks.open, disk, "vault", {passphrase = first})
  print("old one:   " .. (not ok and err.wrong_key and "refused (wrong passphrase)" or "OPENED (bad)"))
  for _, s in ipairs(dm.luks.info(disk).keyslots) do print(("slot %d:    %s, %s"):format(s.slot, s.state, s.pbkdf)) end
  os.remove(dir .. "/first.pass")
  os.remove(dir .. "/second.pass")
end
