// @tus/server with @tus/file-store or @tus/s3-store, as its README starts it.
//
//   node tus-node-server.mjs file <directory>
//   node tus-node-server.mjs s3 <bucket> <endpoint> <partSize> [maxConcurrentPartUploads]
//
// Listens on a free port on 127.0.0.1 and prints "listening on http://127.0.0.1:PORT/files/".
// S3 credentials and region come from the AWS_* environment variables.

import { FileStore } from '@tus/file-store'
import { S3Store } from '@tus/s3-store'
import { Server } from '@tus/server'

const [kind, ...args] = process.argv.slice(2)

function datastore() {
  if (kind === 'file') return new FileStore({ directory: args[0] })
  if (kind === 's3') {
    const [bucket, endpoint, partSize, concurrency] = args
    return new S3Store({
      partSize: Number(partSize),
      ...(concurrency ? { maxConcurrentPartUploads: Number(concurrency) } : {}),
      s3ClientConfig: {
        bucket,
        endpoint,
        forcePathStyle: true,
        region: process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
        credentials: {
          accessKeyId: process.env.AWS_ACCESS_KEY_ID,
          secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
        },
      },
    })
  }
  throw new Error(`unknown store ${kind}; use file or s3`)
}

const server = new Server({ path: '/files', datastore: datastore() })
const http = server.listen({ host: '127.0.0.1', port: 0 }, () => {
  const { port } = http.address()
  process.stdout.write(`listening on http://127.0.0.1:${port}/files/\n`)
})
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0))
