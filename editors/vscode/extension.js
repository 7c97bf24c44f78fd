// The Flow extension's client: starts `flow-lsp` over stdio and hands it every `.flow` file.
// Plain JavaScript, no build step. Highlighting comes from syntaxes/flow.tmLanguage.json and
// works without the server.
'use strict';

const path = require('path');
const vscode = require('vscode');
const { LanguageClient, TransportKind } = require('vscode-languageclient/node');

/** @type {LanguageClient | undefined} */
let client;
/** @type {vscode.OutputChannel | undefined} */
let output;

/** The server command from `flow.server.path`: a bare name is looked up on PATH, a relative
 *  path (`target/release/flow-lsp`) is taken from the first workspace folder. */
function serverCommand() {
  const config = vscode.workspace.getConfiguration('flow');
  let command = (config.get('server.path') || 'flow-lsp').trim();
  if (command.startsWith('~/') && process.env.HOME) {
    command = path.join(process.env.HOME, command.slice(2));
  }
  const folders = vscode.workspace.workspaceFolders;
  if (!path.isAbsolute(command) && /[\\/]/.test(command) && folders && folders.length > 0) {
    command = path.join(folders[0].uri.fsPath, command);
  }
  const args = config.get('server.args') || [];
  return { command, args };
}

async function start() {
  const { command, args } = serverCommand();
  const serverOptions = { command, args, transport: TransportKind.stdio };
  const clientOptions = {
    documentSelector: [
      { scheme: 'file', language: 'flow' },
      { scheme: 'untitled', language: 'flow' },
    ],
    // Imported files change the diagnostics of the files that import them.
    synchronize: { fileEvents: vscode.workspace.createFileSystemWatcher('**/*.flow') },
    outputChannel: output,
    traceOutputChannel: output,
  };
  client = new LanguageClient('flow', 'Flow', serverOptions, clientOptions);
  try {
    await client.start();
  } catch (err) {
    const current = client;
    client = undefined;
    // Keep highlighting working; say how to point the extension at the server.
    current.stop().catch(() => {});
    const choice = await vscode.window.showErrorMessage(
      `Flow: could not start the language server \`${command}\` (${err && err.message ? err.message : err}). ` +
        'Build it with `cargo build --release -p flow-lsp` and put it on PATH, or set `flow.server.path`.',
      'Open Settings',
    );
    if (choice === 'Open Settings') {
      vscode.commands.executeCommand('workbench.action.openSettings', 'flow.server');
    }
  }
}

async function stop() {
  const current = client;
  client = undefined;
  if (current) {
    await current.stop();
  }
}

async function restart() {
  await stop();
  await start();
}

/**
 * The "Run test" code lens of flow-lsp: runs one test with `flowc test` in a terminal (the
 * language server never runs workflows itself).
 * @param {string} file the test file's path
 * @param {string} name the test's name
 */
function runTest(file, name) {
  const flowc = vscode.workspace.getConfiguration('flow').get('flowc.path', 'flowc');
  const quote = (text) => `'${String(text).replace(/'/g, `'\\''`)}'`;
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  const terminal = vscode.window.createTerminal({ name: `Flow test: ${name}`, cwd: folder });
  terminal.show();
  terminal.sendText(`${quote(flowc)} test ${quote(file)} --filter ${quote(name)} --exact`);
}

/** @param {vscode.ExtensionContext} context */
async function activate(context) {
  output = vscode.window.createOutputChannel('Flow');
  context.subscriptions.push(
    output,
    vscode.commands.registerCommand('flow.restartServer', restart),
    vscode.commands.registerCommand('flow.runTest', runTest),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration('flow.server')) {
        restart();
      }
    }),
  );
  await start();
}

function deactivate() {
  return stop();
}

module.exports = { activate, deactivate };
