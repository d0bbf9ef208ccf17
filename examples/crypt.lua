-- "For Your Eyes Only", done right: a random key that never leaves locked
-- memory (the table names it in the kernel keyring), and a passphrase
-- volume that cryptsetup --type plain opens too. No mkfs needed: we write
-- raw bytes, remove the device, open it again and read them back.
--   the article: KEY=$(dd if=/dev/urandom bs=1 count=32 | od -An -tx1 | tr -d ' \n')
--                echo "0 $(blockdev --getsize /dev/loop0) crypt aes-plain $KEY 0 /dev/loop0 0" |
--                  dmsetup create mydata
local dm = require "devmapper"
local dir = arg and arg[1] or os.getenv("TMPDIR") or "/tmp"

local function write(path, offset, s)
  local f = assert(io.open(path, "r+b"))
  f:seek("set", offset); f:write(s); f:close()
end

local function read(path, offset, n)
  local f = assert(io.open(path, "rb"))
  f:seek("set", offset)
  local s = f:read(n)
  f:close()
  return s
end

do
  local scope <close> = dm.scope()
  local l1 = dm.loop.create(dir .. "/store1", "2MiB")
  local message = "meet me at the usual place"

  -- a random key, held only in locked memory
  local key <close> = dm.key.random(64)
  print("key:       " .. tostring(key))
  local mydata = dm.create("mydata", dm.crypt {l1, key = key})
  print("mydata:    " .. tostring(mydata:table()))     -- a keyring reference, no key
  write(mydata.path, 0, message)
  mydata:remove()                                     -- also drops the keyring key
  print(("on disk:   %s"):format(read(l1.file, 0, #message) == message and "PLAINTEXT (bad)" or "ciphertext"))
  local again = dm.create("mydata", dm.crypt {l1, key = key})
  print("reopened:  " .. read(again.path, 0, #message))
  again:remove()

  -- a passphrase, derived as `cryptsetup open --type plain --hash sha256 --key-size 512` does
  local pass = dm.key.plain("correct horse battery staple", {hash = "sha256", size = 64})
  local secret = dm.create("secret", dm.crypt {l1, key = pass})
  write(secret.path, 4096, message)
  secret:remove()
  secret = dm.create("secret", dm.crypt {l1, key = dm.key.plain("correct horse battery staple",
                                                                 {hash = "sha256", size = 64})})
  print("passphrase: " .. read(secret.path, 4096, #message))
end
