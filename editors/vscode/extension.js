// Starts `cnnc lsp` for .cnn files. Plain JavaScript, so that the folder
// works without a build step.
'use strict';

const vscode = require('vscode');
const { LanguageClient } = require('vscode-languageclient/node');

let client;

function createClient() {
  const settings = vscode.workspace.getConfiguration('cnnc');
  // No `transport`: vscode-languageclient would append `--stdio` to the
  // arguments, and a command without one already talks over stdin/stdout.
  const serverOptions = { command: settings.get('path', 'cnnc'), args: ['lsp'] };
  const clientOptions = {
    documentSelector: [{ scheme: 'file', language: 'cnn' }],
    initializationOptions: { shapeHints: settings.get('shapeHints', true) },
    // Sends `workspace/didChangeConfiguration` with `{ cnnc: { ... } }` at
    // start and whenever a `cnnc.*` setting changes.
    synchronize: { configurationSection: 'cnnc' },
  };
  return new LanguageClient('cnnc', 'cnnc', serverOptions, clientOptions);
}

async function start() {
  client = createClient();
  try {
    await client.start();
  } catch (error) {
    vscode.window.showErrorMessage(
      `Could not start \`${vscode.workspace.getConfiguration('cnnc').get('path')} lsp\` ` +
        `(install cnnc or set "cnnc.path"): ${error.message || error}`
    );
  }
}

async function stop() {
  if (client) {
    const running = client;
    client = undefined;
    // A client whose start failed has nothing to stop (and `stop` throws).
    if (running.isRunning()) {
      await running.stop();
    }
  }
}

function activate(context) {
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      // The server reads `shapeHints` from the configuration it is sent; a
      // new command needs a new process.
      if (event.affectsConfiguration('cnnc.path')) {
        await stop();
        await start();
      }
    })
  );
  return start();
}

function deactivate() {
  return stop();
}

module.exports = { activate, deactivate };
