// Upload one file with tus-js-client (its Node build) and print one JSON line with the outcome.
//
//   node upload.mjs '<json options>'
//
// Options (JSON object):
//   endpoint                  creation URL, e.g. http://127.0.0.1:8080/files/ (required)
//   file                      path of the file to upload (required)
//   chunkSize                 bytes per PATCH; a number, or "Infinity"/null for one PATCH (default)
//   uploadLengthDeferred      true: POST with Upload-Defer-Length: 1; the client learns the
//                             length only at the end and sends it with the last PATCH
//   deferredSource            with uploadLengthDeferred: "stream" (default), a plain Readable,
//                             or "buffer", the file's bytes as one Buffer. tus-js-client 4.3.1
//                             hangs on a stream whose size is a multiple of chunkSize (its
//                             issue #779), so such sizes need "buffer".
//   uploadDataDuringCreation  true: the POST carries the first chunk (creation-with-upload)
//   overridePatchMethod       true: POST + X-HTTP-Method-Override: PATCH instead of PATCH
//   metadata                  object of string values, sent as Upload-Metadata
//   parallelUploads           number of partial uploads (concatenation)
//   protocol                  "tus-v1" (default), "ietf-draft-03" or "ietf-draft-05"
//   retryDelays               array of ms, or null (default: null, so server errors surface)
//   addRequestId              true: every request carries a fresh X-Request-ID (a UUID)
//   abortAfterBytes           let only this many body bytes of the first upload request out,
//                             abort that upload, then resume it from its URL in a new Upload
//                             (uploadUrl), as an app does after a crash or a page reload
//
// Output (stdout, one line): {"ok": true, "url": ..., "resumedFromOffset": ..., "requests": [...]}
// or {"ok": false, "error": ..., "requests": [...]} with exit code 1. "requests" lists every
// request sent: method, url, status and the tus response headers, for precise failure reports.

import { createReadStream, readFileSync, statSync } from 'node:fs'
import { PassThrough, Readable, Transform } from 'node:stream'
import { DefaultHttpStack, Upload } from 'tus-js-client'

const REPORTED_HEADERS = [
  'Location',
  'Upload-Offset',
  'Upload-Length',
  'Tus-Resumable',
  'X-Request-ID',
]

function parseOptions(argv) {
  if (argv.length !== 1) {
    throw new Error("usage: node upload.mjs '<json options>'")
  }
  const opts = JSON.parse(argv[0])
  for (const key of ['endpoint', 'file']) {
    if (typeof opts[key] !== 'string') throw new Error(`option ${key} is required`)
  }
  const chunk = opts.chunkSize
  opts.chunkSize =
    chunk == null || chunk === 'Infinity' ? Number.POSITIVE_INFINITY : Number(chunk)
  if (!(opts.chunkSize > 0)) throw new Error(`bad chunkSize: ${chunk}`)
  if (opts.uploadLengthDeferred && !Number.isFinite(opts.chunkSize)) {
    // tus-js-client reads a stream in chunkSize pieces; it refuses an infinite one.
    throw new Error('uploadLengthDeferred needs a finite chunkSize')
  }
  return opts
}

// Holds back every body byte past `limit` and never ends the body, so the request stays open
// with a Content-Length the server will not see in full. `reached` resolves at the limit.
class Throttle extends Transform {
  constructor(limit) {
    super()
    this.left = limit
    this.reached = new Promise((resolve) => {
      this.onReached = resolve
    })
  }

  _transform(chunk, _encoding, callback) {
    if (this.left <= 0) return // stalled: neither passed on nor acknowledged
    const pass = chunk.subarray(0, this.left)
    this.left -= pass.length
    this.push(pass)
    if (this.left > 0) {
      callback()
    } else {
      this.onReached()
    }
  }
}

// Wraps the default Node HTTP stack: records each request and response, and in abort mode
// cuts the first request that carries a body after `abortAfterBytes` bytes.
class RecordingStack {
  constructor(abortAfterBytes) {
    this.inner = new DefaultHttpStack()
    this.log = []
    this.abortAfterBytes = abortAfterBytes
    this.limitReached = null
  }

  getName() {
    return 'RecordingStack'
  }

  createRequest(method, url) {
    const req = this.inner.createRequest(method, url)
    const stack = this
    const entry = { method, url }
    const send = req.send.bind(req)
    req.send = (body = null) => {
      const override = req.getHeader('X-HTTP-Method-Override')
      if (override) entry.override = override
      const requestId = req.getHeader('X-Request-ID')
      if (requestId) entry.requestId = requestId
      const declared = req.getHeader('Upload-Length')
      if (declared != null && method !== 'POST') entry.declaresLength = Number(declared)
      entry.bodyBytes = body?.size ?? 0
      stack.log.push(entry)
      if (body != null && body.size > 0 && stack.abortAfterBytes != null && !stack.limitReached) {
        const source = body instanceof Readable ? body : Readable.from([Buffer.from(body)])
        const throttle = new Throttle(stack.abortAfterBytes)
        throttle.size = body.size
        stack.limitReached = throttle.reached
        source.pipe(throttle)
        body = throttle
      }
      return send(body).then(
        (res) => {
          entry.status = res.getStatus()
          entry.headers = {}
          for (const name of REPORTED_HEADERS) {
            const value = res.getHeader(name)
            if (value != null) entry.headers[name] = value
          }
          if (entry.status >= 400) entry.body = res.getBody().slice(0, 500)
          return res
        },
        (err) => {
          entry.error = String(err?.message ?? err)
          throw err
        },
      )
    }
    return req
  }
}

function openSource(opts) {
  if (!opts.uploadLengthDeferred) return createReadStream(opts.file)
  if (opts.deferredSource === 'buffer') return readFileSync(opts.file)
  // A plain stream (not an fs.ReadStream with a path) so the client cannot stat the size.
  return createReadStream(opts.file).pipe(new PassThrough())
}

function uploadOptions(opts, stack, extra) {
  const options = {
    endpoint: opts.endpoint,
    chunkSize: opts.chunkSize,
    metadata: opts.metadata ?? {},
    retryDelays: opts.retryDelays ?? null,
    uploadLengthDeferred: Boolean(opts.uploadLengthDeferred),
    uploadDataDuringCreation: Boolean(opts.uploadDataDuringCreation),
    overridePatchMethod: Boolean(opts.overridePatchMethod),
    parallelUploads: opts.parallelUploads ?? 1,
    addRequestId: Boolean(opts.addRequestId),
    httpStack: stack,
    ...extra,
  }
  if (opts.protocol != null) options.protocol = opts.protocol
  // With parallelUploads the client reads the size from the file itself and refuses uploadSize.
  if (!opts.uploadLengthDeferred && !(options.parallelUploads > 1)) {
    options.uploadSize = statSync(opts.file).size
  }
  return options
}

function run(opts, stack, extra = {}) {
  return new Promise((resolve, reject) => {
    const upload = new Upload(openSource(opts), {
      ...uploadOptions(opts, stack, extra),
      onError: reject,
      onSuccess: () => resolve(upload),
    })
    upload.start()
  })
}

async function abortThenResume(opts, stack) {
  let failure = null
  const first = new Upload(openSource(opts), {
    ...uploadOptions(opts, stack, {}),
    onError: (err) => {
      failure = err
    },
    onSuccess: () => {
      failure = new Error(`upload finished before ${opts.abortAfterBytes} bytes were sent`)
    },
  })
  first.start()
  const deadline = Date.now() + 30_000
  while (stack.limitReached == null && failure == null) {
    if (Date.now() > deadline) throw new Error('no request with a body was sent within 30s')
    await new Promise((r) => setTimeout(r, 10))
  }
  if (failure != null) throw failure
  await stack.limitReached
  // Let the bytes already written reach the server before the connection drops.
  await new Promise((r) => setTimeout(r, 300))
  await first.abort(false)
  if (first.url == null) throw new Error('the first upload has no URL to resume from')

  let resumedFromOffset = null
  const resumed = await run(opts, stack, {
    uploadUrl: first.url,
    onAfterResponse: (req, res) => {
      if (req.getMethod() === 'HEAD' && resumedFromOffset == null) {
        resumedFromOffset = Number(res.getHeader('Upload-Offset'))
      }
    },
  })
  return { upload: resumed, resumedFromOffset }
}

let printed = false
let recorder = null

function report(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`)
  printed = true
}

// A client that waits on a promise nothing will settle lets Node's event loop run dry and exit 0
// without a word; say so instead.
process.on('exit', () => {
  if (!printed) {
    const error = 'the event loop ran dry before the upload finished (client hung)'
    report({ ok: false, error, requests: recorder?.log ?? [] })
    process.exitCode = 1
  }
})

async function main() {
  try {
    const opts = parseOptions(process.argv.slice(2))
    recorder = new RecordingStack(opts.abortAfterBytes ?? null)
    let result
    if (opts.abortAfterBytes != null) {
      const { upload, resumedFromOffset } = await abortThenResume(opts, recorder)
      result = { ok: true, url: upload.url, resumedFromOffset }
    } else {
      const upload = await run(opts, recorder)
      result = { ok: true, url: upload.url }
    }
    report({ ...result, requests: recorder.log })
  } catch (err) {
    const error = String(err?.stack ?? err)
    report({ ok: false, error, requests: recorder?.log ?? [] })
    process.exitCode = 1
  }
}

await main()
