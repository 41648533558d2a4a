// End-to-end test of Kaon's JSON-RPC as a DApp developer uses it: ethers v6 against a running
// `kaon devnet`, with a Solidity contract compiled by solc-js. Exits non-zero on any failure.
//
//   KAON_RPC=http://127.0.0.1:8545/chain/1001 KAON_CHAIN_ID=1001 node e2e.mjs
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import solc from "solc";
import {
  ContractFactory,
  HDNodeWallet,
  JsonRpcProvider,
  WebSocketProvider,
  Wallet,
  parseEther,
} from "ethers";

const MNEMONIC = "test test test test test test test test test test test junk";
const url = process.env.KAON_RPC ?? "http://127.0.0.1:8545/chain/1001";
const chainId = BigInt(process.env.KAON_CHAIN_ID ?? "1001");
const deadline = setTimeout(() => {
  console.error("e2e: timed out");
  process.exit(2);
}, Number(process.env.KAON_E2E_TIMEOUT_MS ?? 120000));

function step(what) {
  console.log(`e2e: ${what}`);
}

function compile() {
  const source = readFileSync(new URL("./Token.sol", import.meta.url), "utf8");
  const input = {
    language: "Solidity",
    sources: { "Token.sol": { content: source } },
    settings: {
      evmVersion: "cancun",
      optimizer: { enabled: true, runs: 200 },
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  assert.equal(errors.length, 0, JSON.stringify(errors));
  const token = output.contracts["Token.sol"].Token;
  return { abi: token.abi, bytecode: "0x" + token.evm.bytecode.object };
}

async function expectRejected(promise, pattern, what) {
  try {
    await promise;
  } catch (e) {
    const text = `${e.shortMessage ?? ""} ${e.message ?? ""} ${JSON.stringify(e.info ?? {})}`;
    assert.match(text, pattern, `${what}: unexpected error ${text}`);
    step(`${what}: rejected (${pattern})`);
    return;
  }
  assert.fail(`${what}: was accepted`);
}

const provider = new JsonRpcProvider(url, undefined, { staticNetwork: false, polling: true, pollingInterval: 200 });
const network = await provider.getNetwork();
assert.equal(network.chainId, chainId, "eth_chainId");
step(`connected to ${url}, chain ${network.chainId}, height ${await provider.getBlockNumber()}`);

const root = HDNodeWallet.fromPhrase(MNEMONIC, undefined, "m/44'/60'/0'/0/0").connect(provider);
assert.equal(root.address, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
const funded = await provider.getBalance(root.address);
assert.ok(funded > parseEther("1000"), `dev account 0 is funded (${funded})`);

// 1. A value transfer to a fresh address.
const fresh = Wallet.createRandom().address;
const sent = await root.sendTransaction({ to: fresh, value: parseEther("1.5") });
const receipt = await sent.wait(1, 60000);
assert.equal(receipt.status, 1, "transfer succeeded");
assert.equal(await provider.getBalance(fresh), parseEther("1.5"), "recipient balance");
const tx = await provider.getTransaction(sent.hash);
assert.equal(tx.from, root.address);
const block = await provider.getBlock(receipt.blockNumber);
assert.ok(block.transactions.includes(sent.hash), "block lists the transaction");
step(`transfer mined in block ${receipt.blockNumber}`);

// 2. Deploy an ERC-20 compiled with solc-js, call it, read its logs.
const { abi, bytecode } = compile();
const factory = new ContractFactory(abi, bytecode, root);
const token = await factory.deploy("Kaon Test", "KTT", parseEther("1000000"));
await token.waitForDeployment();
const address = await token.getAddress();
assert.ok((await provider.getCode(address)).length > 2, "contract code stored");
assert.equal(await token.symbol(), "KTT");
assert.equal(await token.balanceOf(root.address), parseEther("1000000"));
step(`token deployed at ${address}`);

const moved = await (await token.transfer(fresh, 12345n)).wait(1, 60000);
assert.equal(moved.status, 1);
assert.equal(await token.balanceOf(fresh), 12345n);
const parsed = moved.logs.map((l) => token.interface.parseLog(l)).filter(Boolean);
assert.equal(parsed[0].name, "Transfer");
assert.equal(parsed[0].args.to, fresh);
const events = await token.queryFilter(token.filters.Transfer(root.address, fresh), 0, "latest");
assert.equal(events.length, 1, "eth_getLogs finds the transfer by topics");
assert.equal(events[0].args.value, 12345n);
step("token transfer, receipt logs and eth_getLogs agree");

// 3. A revert: eth_call / estimateGas carry the reason.
await expectRejected(
  token.transfer.staticCall(fresh, parseEther("2000000")),
  /insufficient balance/,
  "reverting call",
);
await expectRejected(
  token.transfer.estimateGas(fresh, parseEther("2000000")),
  /insufficient balance/,
  "reverting gas estimate",
);

// 4. Bad transactions are refused with clear errors.
const nonce = await provider.getTransactionCount(root.address, "pending");
const feeData = await provider.getFeeData();
const base = {
  to: fresh,
  value: 1n,
  gasLimit: 21000n,
  maxFeePerGas: feeData.maxFeePerGas,
  maxPriorityFeePerGas: feeData.maxPriorityFeePerGas,
  type: 2,
};
await expectRejected(
  provider.broadcastTransaction(await root.signTransaction({ ...base, chainId: chainId + 7n, nonce })),
  /chain/i,
  "wrong chain id",
);
await expectRejected(
  provider.broadcastTransaction(await root.signTransaction({ ...base, chainId, nonce: 0 })),
  /nonce too low/i,
  "stale nonce",
);
const pauper = Wallet.createRandom();
await expectRejected(
  provider.broadcastTransaction(await pauper.signTransaction({ ...base, chainId, nonce: 0 })),
  /insufficient funds/i,
  "unfunded sender",
);

// 5. New heads over WebSocket.
const ws = new WebSocketProvider(url.replace(/^http/, "ws"));
const head = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error("no newHeads within 30 s")), 30000);
  ws.on("block", (n) => {
    clearTimeout(timer);
    resolve(n);
  });
});
assert.ok(head >= receipt.blockNumber, "subscription delivers new heads");
await ws.destroy();
step(`newHeads subscription delivered block ${head}`);

provider.destroy();
clearTimeout(deadline);
console.log("e2e: ok");
