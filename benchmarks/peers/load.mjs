// Load generator on node:http (no tus client library): many uploads at once, or a stream of
// small requests. Prints one JSON line.
//
//   node load.mjs uploads <endpoint> <count> <size>
//       <count> uploads of <size> bytes, all started at once, each a POST and one PATCH.
//       -> {"errors": n, "durations": [seconds per upload...], "seconds": wall, "firstError": ...}
//   node load.mjs head <endpoint> <connections> <seconds>
//   node load.mjs patch <endpoint> <connections> <seconds> <patchSize>
//       <connections> keep-alive connections, each on its own upload, each sending HEADs (or
//       PATCHes of <patchSize> bytes at the offset the last answer gave) back to back.
//       -> {"requests": n, "errors": n, "seconds": measured, "total": n, "firstError": ...}
//       (`requests` in the measured `seconds`; `total` also counts the warm-up's and the POSTs)

import http from 'node:http'

const TUS = { 'Tus-Resumable': '1.0.0' }
// Some servers (tuspyserver) refuse uploads without a file name and type.
const METADATA = `filename ${btoa('bench.bin')},filetype ${btoa('application/octet-stream')}`

function request(agent, method, url, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent, headers }, (res) => {
      // Keep the start of an error answer: it says what went wrong.
      res.text = ''
      res.on('data', (data) => {
        if (res.statusCode >= 400 && res.text.length < 300) res.text += data
      })
      res.on('end', () => resolve(res))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

async function create(agent, endpoint, length) {
  const res = await request(agent, 'POST', endpoint, {
    ...TUS,
    'Upload-Length': String(length),
    'Upload-Metadata': METADATA,
  })
  if (res.statusCode !== 201) throw new Error(`POST answered ${res.statusCode}: ${res.text}`)
  return new URL(res.headers.location, endpoint).href
}

async function patch(agent, url, offset, body) {
  const res = await request(agent, 'PATCH', url, {
    ...TUS,
    'Upload-Offset': String(offset),
    'Content-Type': 'application/offset+octet-stream',
    'Content-Length': String(body.length),
  }, body)
  if (res.statusCode !== 204) throw new Error(`PATCH answered ${res.statusCode}: ${res.text}`)
  return Number(res.headers['upload-offset'])
}

const seconds = (start) => Number(process.hrtime.bigint() - start) / 1e9

async function uploads(endpoint, count, size) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: count })
  const body = Buffer.alloc(size, 0x61)
  let errors = 0
  let firstError = null
  const durations = []
  const started = process.hrtime.bigint()
  await Promise.all(
    Array.from({ length: count }, async () => {
      const t0 = process.hrtime.bigint()
      try {
        const url = await create(agent, endpoint, size)
        const offset = await patch(agent, url, 0, body)
        if (offset !== size) throw new Error(`offset ${offset} after the PATCH, expected ${size}`)
        durations.push(seconds(t0))
      } catch (err) {
        errors += 1
        firstError ??= String(err?.message ?? err)
      }
    }),
  )
  return { errors, durations, seconds: seconds(started), firstError }
}

async function smallRequests(mode, endpoint, connections, duration, patchSize) {
  const body = Buffer.alloc(patchSize || 0, 0x61)
  const length = 2 ** 40 // never reached: every PATCH has room
  let requests = 0
  let total = connections // the POSTs
  let errors = 0
  let firstError = null
  const agents = []
  const urls = []
  for (let i = 0; i < connections; i++) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    agents.push(agent)
    urls.push(await create(agent, endpoint, length))
  }
  const warmup = 0.5
  const started = process.hrtime.bigint()
  let measuredFrom = null
  await Promise.all(
    urls.map(async (url, i) => {
      let offset = 0
      while (seconds(started) < warmup + duration) {
        const counting = seconds(started) >= warmup
        try {
          if (mode === 'head') {
            const res = await request(agents[i], 'HEAD', url, TUS)
            if (res.statusCode !== 200) throw new Error(`HEAD answered ${res.statusCode}`)
          } else {
            offset = await patch(agents[i], url, offset, body)
          }
          if (counting) requests += 1
          total += 1
        } catch (err) {
          errors += 1
          firstError ??= String(err?.message ?? err)
          if (mode === 'patch') break // the offset is unknown now
        }
      }
    }),
  )
  measuredFrom = warmup
  return { requests, errors, seconds: seconds(started) - measuredFrom, total, firstError }
}

const [mode, endpoint, a, b, c] = process.argv.slice(2)
const result =
  mode === 'uploads'
    ? await uploads(endpoint, Number(a), Number(b))
    : await smallRequests(mode, endpoint, Number(a), Number(b), Number(c ?? 0))
process.stdout.write(`${JSON.stringify(result)}\n`)
