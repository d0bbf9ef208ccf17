-- Turns lua/devmapper/*.lua into C: devmapper_preload() registers each one
-- (and devmapper.core) in package.preload, so dmlua needs no files at run time.
local out = {'#include <lua.h>\n#include <lauxlib.h>\n#include "devmapper.h"\n'}
local mods = {}
for i, path in ipairs(arg) do
  local f = assert(io.open(path, "rb"))
  local src = f:read("a"); f:close()
  -- lua/devmapper/x/y.lua is devmapper.x.y; init.lua is its directory's module
  local name = path:match("(devmapper/.-)%.lua$"):gsub("/init$", ""):gsub("/", ".")
  local bytes = {}
  for j = 1, #src do bytes[#bytes + 1] = src:byte(j) end
  out[#out + 1] = ("static const char src%d[] = {%s};\n"):format(i, table.concat(bytes, ","))
  mods[#mods + 1] = {name = name, var = "src" .. i, chunk = "@" .. path}
end
out[#out + 1] = [[
static int load_embedded(lua_State *L)
{
	const char *src = lua_touserdata(L, lua_upvalueindex(1));
	size_t len = lua_tointeger(L, lua_upvalueindex(2));
	const char *chunk = lua_tostring(L, lua_upvalueindex(3));
	if (luaL_loadbuffer(L, src, len, chunk) != LUA_OK)
		return lua_error(L);
	lua_pushvalue(L, 1);
	lua_call(L, 1, 1);
	return 1;
}

static void add(lua_State *L, const char *name, const char *src, size_t len, const char *chunk)
{
	lua_pushlightuserdata(L, (void *)src);
	lua_pushinteger(L, (lua_Integer)len);
	lua_pushstring(L, chunk);
	lua_pushcclosure(L, load_embedded, 3);
	lua_setfield(L, -2, name);
}

void devmapper_preload(lua_State *L)
{
	luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
	lua_pushcfunction(L, luaopen_devmapper_core);
	lua_setfield(L, -2, "devmapper.core");
]]
for _, m in ipairs(mods) do
  out[#out + 1] = ('\tadd(L, "%s", %s, sizeof %s, "%s");\n'):format(m.name, m.var, m.var, m.chunk)
end
out[#out + 1] = "\tlua_pop(L, 1);\n}\n"
io.write(table.concat(out))
