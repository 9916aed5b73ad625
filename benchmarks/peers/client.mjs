// One timed upload with tus-js-client (its Node build); prints one JSON line.
//
//   node client.mjs <endpoint> <file> <chunkSize|Infinity>
//
// Output: {"ok": true, "seconds": <POST to last response>, "url": ...} or {"ok": false, "error": ...}
// The clock starts right before the upload starts, so Node's own start-up is not counted.

import { createReadStream, statSync } from 'node:fs'
import { Upload } from 'tus-js-client'

const [endpoint, file, chunkArg] = process.argv.slice(2)
const chunkSize = chunkArg === 'Infinity' ? Number.POSITIVE_INFINITY : Number(chunkArg)

const started = process.hrtime.bigint()
const upload = new Upload(createReadStream(file), {
  endpoint,
  chunkSize,
  uploadSize: statSync(file).size,
  retryDelays: null,
  metadata: { filename: 'bench.bin', filetype: 'application/octet-stream' },
  onError(err) {
    process.stdout.write(`${JSON.stringify({ ok: false, error: String(err?.message ?? err) })}\n`)
    process.exitCode = 1
  },
  onSuccess() {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    process.stdout.write(`${JSON.stringify({ ok: true, seconds, url: upload.url })}\n`)
  },
})
upload.start()
