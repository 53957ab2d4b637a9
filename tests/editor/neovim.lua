-- Neovim's own LSP client against `cnnc lsp`: opens FILE, waits for a
-- diagnostic on line ERROR_LINE (from 0) that names ERROR_TEXT, then asks
-- for a hover at HOVER_LINE (from 1), HOVER_COLUMN (from 0), whose text
-- must hold HOVER_TEXT; exits 0 when both came as expected (a code above 0
-- says which did not). Run by tests/lsp_neovim.rs:
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
  vim.lsp.stop_client(id)
end)
if ok then
  finish(0, "ok")
else
  finish(1, "error: " .. tostring(err))
end
