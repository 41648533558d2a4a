// The 1 000-transfer burst a wallet or script sends at once, timed as a DApp developer sees
// it: sign N transfers from development account 0 with explicit nonces, send them all
// concurrently through ethers (JSON-RPC batches of up to 100), then wait until the chain's
// nonce shows every one included. The same script runs against `kaon devnet` and anvil.
// The provider's cache is off: by default ethers answers a repeated call from a promise up
// to 250 ms old, so the poll would see inclusion up to 250 ms late.
//
//   node tests/e2e/burst.mjs [URL] [N]      (default http://127.0.0.1:8545, 1000)
//
// Last line: "burst: N transfers, accepted in A ms, all final in F ms (R tx/s)".
import { HDNodeWallet, JsonRpcProvider, Wallet } from "ethers";

const MNEMONIC = "test test test test test test test test test test test junk";
const url = process.argv[2] ?? "http://127.0.0.1:8545";
const n = Number(process.argv[3] ?? 1000);

const provider = new JsonRpcProvider(url, undefined, {
  batchMaxCount: 100,
  staticNetwork: true,
  cacheTimeout: -1,
});
const account = HDNodeWallet.fromPhrase(MNEMONIC, undefined, "m/44'/60'/0'/0/0");
const wallet = new Wallet(account.privateKey, provider);
const { chainId } = await provider.getNetwork();
const first = await provider.getTransactionCount(wallet.address, "pending");
const fees = await provider.getFeeData();
const to = Wallet.createRandom().address;
const signed = await Promise.all(
  Array.from({ length: n }, (_, i) =>
    wallet.signTransaction({
      type: 2,
      chainId,
      to,
      value: 1n,
      nonce: first + i,
      gasLimit: 21000n,
      maxFeePerGas: fees.maxFeePerGas * 2n,
      maxPriorityFeePerGas: fees.maxPriorityFeePerGas,
    }),
  ),
);

const start = performance.now();
const hashes = await Promise.all(
  signed.map((raw) => provider.send("eth_sendRawTransaction", [raw])),
);
const accepted = performance.now() - start;
if (new Set(hashes).size !== n) throw new Error(`expected ${n} distinct hashes`);
// Final once the committed nonce has passed the last transfer.
while ((await provider.getTransactionCount(wallet.address, "latest")) < first + n) {
  await new Promise((resolve) => setTimeout(resolve, 2));
}
// A node may show the nonce a few milliseconds before the receipt (docs/rpc.md): final is
// when the last transfer's receipt is readable too.
let last;
while (!(last = await provider.getTransactionReceipt(hashes[n - 1]))) {
  await new Promise((resolve) => setTimeout(resolve, 2));
}
const final = performance.now() - start;
if (last.status !== 1) throw new Error(`last transfer not successful: ${JSON.stringify(last)}`);
console.log(
  `burst: ${n} transfers, accepted in ${accepted.toFixed(0)} ms, ` +
    `all final in ${final.toFixed(0)} ms (${((n * 1000) / final).toFixed(0)} tx/s)`,
);
