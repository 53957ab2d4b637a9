-- Neovim's own LSP client against `cnnc lsp`: opens FILE, waits for a
-- diagnostic on line ERROR_LINE (from 0) that names ERROR_TEXT, then asks
-- for a hover at HOVER_LINE (from 1), HOVER_COLUMN (from 0), whose text
-- must hold HOVER_TEXT; applies the error's quick fix with Neovim's own
-- edit, after which the line must hold FIX_TEXT and the diagnostic must
-- go; then asks for the definition at DEFINITION_LINE, DEFINITION_COLUMN,
-- which must be in a file whose name ends with DEFINITION_FILE. Exits 0
-- when all came as expected (a code above 0 says which did not). Run by
-- tests/lsp_neovim.rs:
--   SERVER=cnnc FILE=m.cnn ERROR_LINE=... nvim --headless -u NONE -i NONE -n -c 'luafile neovim.lua'
-- Written for Neovim 0.7 (Debian 12's) and later: 0.7 has no
-- vim.lsp.start, and no `-l` to run a script.
local function finish(code, message)
  io.stderr:write(message .. "\n")
  vim.cmd("cquit " .. code)
end

local ok, err = pcall(function()
  vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("FILE")))
  local bufnr = vim.api.nvim_get_current_buf()
  local config = {
    name = "cnnc",
    cmd = { os.getenv("SERVER"), "lsp" },
    root_dir = vim.fn.fnamemodify(os.getenv("FILE"), ":p:h"),
  }
  local id
  if vim.lsp.start then
    id = vim.lsp.start(config)
  else
    id = vim.lsp.start_client(config)
    assert(id and vim.lsp.buf_attach_client(bufnr, id), "the client did not attach")
  end
  local arrived = vim.wait(20000, function()
    return #vim.diagnostic.get(bufnr) > 0
  end, 50)
  if not arrived then
    return finish(2, "no diagnostic arrived")
  end
  local d = vim.diagnostic.get(bufnr)[1]
  local line = tonumber(os.getenv("ERROR_LINE"))
  if not (d.lnum == line and d.message:find(os.getenv("ERROR_TEXT"), 1, true)) then
    return finish(3, "an unexpected diagnostic: " .. vim.inspect(d))
  end
  vim.api.nvim_win_set_cursor(0, { tonumber(os.getenv("HOVER_LINE")), tonumber(os.getenv("HOVER_COLUMN")) })
  local params = vim.lsp.util.make_position_params(0, "utf-16")
  local responses = vim.lsp.buf_request_sync(bufnr, "textDocument/hover", params, 20000)
  local response = responses and responses[id]
  if not (response and response.result) then
    return finish(4, "no hover: " .. vim.inspect(responses))
  end
  local text = vim.inspect(response.result.contents)
  if not text:find(os.getenv("HOVER_TEXT"), 1, true) then
    return finish(5, "the hover lacks " .. os.getenv("HOVER_TEXT") .. ": " .. text)
  end

  -- The quick fix, applied as the editor applies one: Neovim then sends
  -- the change, and the error goes.
  local range = {
    start = { line = d.lnum, character = d.col },
    ["end"] = { line = d.end_lnum, character = d.end_col },
  }
  local actions = vim.lsp.buf_request_sync(bufnr, "textDocument/codeAction", {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    range = range,
    context = { diagnostics = {} },
  }, 20000)
  local action = actions and actions[id] and actions[id].result and actions[id].result[1]
  if not (action and action.edit) then
    return finish(6, "no quick fix: " .. vim.inspect(actions))
  end
  vim.lsp.util.apply_workspace_edit(action.edit, "utf-16")
  local fixed = vim.api.nvim_buf_get_lines(bufnr, line, line + 1, true)[1]
  if not fixed:find(os.getenv("FIX_TEXT"), 1, true) then
    return finish(7, "the fix left " .. fixed)
  end
  local cleared = vim.wait(20000, function()
    return #vim.diagnostic.get(bufnr) == 0
  end, 50)
  if not cleared then
    return finish(8, "the error stayed: " .. vim.inspect(vim.diagnostic.get(bufnr)))
  end

  vim.api.nvim_win_set_cursor(0, { tonumber(os.getenv("DEFINITION_LINE")), tonumber(os.getenv("DEFINITION_COLUMN")) })
  params = vim.lsp.util.make_position_params(0, "utf-16")
  local definitions = vim.lsp.buf_request_sync(bufnr, "textDocument/definition", params, 20000)
  local place = definitions and definitions[id] and definitions[id].result
  local wanted = os.getenv("DEFINITION_FILE")
  if not (place and place.uri and place.uri:sub(-#wanted) == wanted) then
    return finish(9, "no definition in " .. wanted .. ": " .. vim.inspect(definitions))
  end
  vim.lsp.stop_client(id)
end)
if ok then
  finish(0, "ok")
else
  finish(1, "error: " .. tostring(err))
end
