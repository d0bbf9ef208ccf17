-- LDoc's text format for this project's doc comments (config.ld: format =
-- "ldoc_text"): plain text whose `<`, `>` and `&` are shown as written (the
-- kernel's table grammars, "<dev> <offset>"), with the links and code spans
-- LDoc made from @{...} and backticks kept; a blank line starts a paragraph.
local keep = {["a"] = true, ["/a"] = true, ["code"] = true, ["/code"] = true}
return function(txt)
  txt = txt:gsub("&([#%w]*;?)", function(e) if not e:match("^#?%w+;$") then return "&amp;" .. e end end)
  txt = txt:gsub("<(/?)([%a]*)([^<>]*)>", function(slash, tag, rest)
    if keep[slash .. tag] and (tag ~= "a" or slash == "/" or rest:match("^ href=")) then return nil end
    return "&lt;" .. slash .. tag .. rest .. "&gt;"
  end)
  txt = txt:gsub("<([^/%a])", "&lt;%1")
  return (txt:gsub("\n%s*\n", "\n<p>"))
end
