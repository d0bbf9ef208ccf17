package = "lua-devmapper"
version = "scm-1"
source = {url = "git+https://example.invalid/lua-devmapper.git"}
description = {
  summary = "Script Linux device-mapper from Lua: devices, tables, loops, keys, snapshots",
  license = "MIT",
}
dependencies = {"lua >= 5.4"}
external_dependencies = {
  DEVMAPPER = {header = "libdevmapper.h", library = "devmapper"},
  OPENSSL = {header = "openssl/evp.h", library = "crypto"},
  CRYPTSETUP = {header = "libcryptsetup.h", library = "cryptsetup"},
}
build = {
  type = "builtin",
  modules = {
    ["devmapper.core"] = {
      sources = {"csrc/core.c", "csrc/dm.c", "csrc/loop.c", "csrc/blkdev.c", "csrc/secure.c",
                  "csrc/kdf.c", "csrc/keyinput.c", "csrc/keyring.c",
                  "csrc/preflight.c", "csrc/critical.c",
                  "csrc/lock.c", "csrc/spawn.c", "csrc/luks.c", "csrc/verity.c"},
      libraries = {"devmapper", "crypto", "cryptsetup"},
      incdirs = {"$(DEVMAPPER_INCDIR)", "$(OPENSSL_INCDIR)", "$(CRYPTSETUP_INCDIR)"},
      libdirs = {"$(DEVMAPPER_LIBDIR)", "$(OPENSSL_LIBDIR)", "$(CRYPTSETUP_LIBDIR)"},
    },
    ["devmapper"] = "lua/devmapper/init.lua",
    ["devmapper.check"] = "lua/devmapper/check.lua",
    ["devmapper.device"] = "lua/devmapper/device.lua",
    ["devmapper.field"] = "lua/devmapper/field.lua",
    ["devmapper.kernel"] = "lua/devmapper/kernel.lua",
    ["devmapper.key"] = "lua/devmapper/key.lua",
    ["devmapper.keyring"] = "lua/devmapper/keyring.lua",
    ["devmapper.loop"] = "lua/devmapper/loop.lua",
    ["devmapper.luks"] = "lua/devmapper/luks.lua",
    ["devmapper.sandbox"] = "lua/devmapper/sandbox.lua",
    ["devmapper.scope"] = "lua/devmapper/scope.lua",
    ["devmapper.size"] = "lua/devmapper/size.lua",
    ["devmapper.snapshot"] = "lua/devmapper/snapshot.lua",
    ["devmapper.stack"] = "lua/devmapper/stack.lua",
    ["devmapper.table"] = "lua/devmapper/table.lua",
    ["devmapper.target"] = "lua/devmapper/target.lua",
    ["devmapper.targets.crypt"] = "lua/devmapper/targets/crypt.lua",
    ["devmapper.targets.error"] = "lua/devmapper/targets/error.lua",
    ["devmapper.targets.linear"] = "lua/devmapper/targets/linear.lua",
    ["devmapper.targets.luks"] = "lua/devmapper/targets/luks.lua",
    ["devmapper.targets.raid"] = "lua/devmapper/targets/raid.lua",
    ["devmapper.targets.snapshot"] = "lua/devmapper/targets/snapshot.lua",
    ["devmapper.targets.snapshot_merge"] = "lua/devmapper/targets/snapshot_merge.lua",
    ["devmapper.targets.snapshot_origin"] = "lua/devmapper/targets/snapshot_origin.lua",
    ["devmapper.targets.striped"] = "lua/devmapper/targets/striped.lua",
    ["devmapper.targets.verity"] = "lua/devmapper/targets/verity.lua",
    ["devmapper.targets.zero"] = "lua/devmapper/targets/zero.lua",
    ["devmapper.transaction"] = "lua/devmapper/transaction.lua",
    ["devmapper.verity"] = "lua/devmapper/verity.lua",
  },
}
