// A small tus 1.0.0 client for browsers: creation, uploads in one or more PATCH requests with
// progress, pause and resume (HEAD, then PATCH from the server's offset), retries, and resume
// after a page reload: the upload URL is kept in localStorage under the file's fingerprint
// (name, size, modification time, endpoint) until the upload finishes or is cancelled.
//
//   import { TusUpload } from './tus-client.js'
//   const upload = new TusUpload(file, { endpoint: '/files/', onProgress, onSuccess, onError })
//   upload.start(); upload.pause(); upload.start(); await upload.abort()
//
// It is the demo page's uploader and a readable reference for what this server expects. For
// production apps, tus-js-client and Uppy do much more (parallel uploads, many storages, ...).

const TUS_VERSION = '1.0.0'

export class TusError extends Error {
  constructor(message, status = 0, body = '') {
    super(message)
    this.status = status
    this.body = body
  }
}

function encodeMetadata(metadata) {
  return Object.entries(metadata)
    .map(([key, value]) => {
      const bytes = new TextEncoder().encode(String(value))
      let binary = ''
      for (const b of bytes) binary += String.fromCharCode(b)
      return binary ? `${key} ${btoa(binary)}` : key
    })
    .join(',')
}

// Statuses worth another try: the network (0), a lock still held by our previous request (423),
// an offset that moved under us (409: HEAD tells the truth), and server trouble. Anything else
// (413 too large, 400, 403, ...) fails the same way again.
export function retriable(status) {
  return status === 0 || status === 409 || status === 423 || status === 429 || status >= 500
}

const STORAGE_PREFIX = 'tusd-py::'

function remembered(key) {
  try {
    return window.localStorage.getItem(key)
  } catch {
    return null // storage disabled (private mode, a sandboxed frame): no resume after reload
  }
}

function remember(key, value) {
  try {
    if (value === null) window.localStorage.removeItem(key)
    else window.localStorage.setItem(key, value)
  } catch {
    // as above
  }
}

export class TusUpload {
  constructor(file, options) {
    this.file = file
    this.options = {
      endpoint: '/files/',
      chunkSize: Infinity, // bytes per PATCH; Infinity sends the rest of the file at once
      metadata: {},
      headers: {},
      retryDelays: [0, 1000, 3000, 5000],
      onProgress: () => {},
      onSuccess: () => {},
      onError: () => {},
      ...options,
    }
    const { name, size, lastModified } = file
    this.fingerprint = `${STORAGE_PREFIX}${this.options.endpoint}::${name}::${size}::${lastModified}`
    this.url = remembered(this.fingerprint)
    this.resumed = this.url !== null // from an upload an earlier page started
    this.offset = 0
    this.paused = true
    this.finished = false
    this._xhr = null
    this._attempt = 0
    this._timer = null
  }

  start() {
    if (!this.paused || this.finished) return
    this.paused = false
    this._run()
  }

  pause() {
    this.paused = true
    clearTimeout(this._timer)
    // The server keeps every byte that arrived; the next start() asks it where to go on.
    if (this._xhr) this._xhr.abort()
  }

  async abort() {
    this.pause()
    remember(this.fingerprint, null)
    if (this.url) await this._request('DELETE', this.url)
  }

  async _run() {
    try {
      if (this.url === null) await this._create()
      else await this._head()
      while (!this.paused && this.offset < this.file.size) await this._patch()
      if (this.paused) return
      this.finished = true
      remember(this.fingerprint, null)
      this.options.onSuccess(this)
    } catch (err) {
      if (this.paused) return
      const delays = this.options.retryDelays || []
      if (err instanceof TusError && retriable(err.status) && this._attempt < delays.length) {
        this._timer = setTimeout(() => this._run(), delays[this._attempt++])
        return
      }
      this.paused = true
      this.options.onError(err)
    }
  }

  async _create() {
    const headers = { 'Upload-Length': String(this.file.size) }
    const metadata = encodeMetadata({
      filename: this.file.name,
      filetype: this.file.type || 'application/octet-stream',
      ...this.options.metadata,
    })
    if (metadata) headers['Upload-Metadata'] = metadata
    const res = await this._request('POST', this.options.endpoint, headers)
    if (res.status !== 201) throw this._failure('create the upload', res)
    const location = res.getResponseHeader('Location')
    if (!location) throw new TusError('the server sent no Location for the new upload', res.status)
    this.url = new URL(location, new URL(this.options.endpoint, window.location.href)).href
    this.offset = 0
    this._attempt = 0
    remember(this.fingerprint, this.url)
  }

  async _head() {
    const res = await this._request('HEAD', this.url)
    if ((res.status === 404 || res.status === 410) && this.resumed) {
      // The remembered upload expired or was removed: start a new one.
      remember(this.fingerprint, null)
      this.url = null
      this.resumed = false
      return this._create()
    }
    if (res.status !== 200 && res.status !== 204) throw this._failure('resume the upload', res)
    this.offset = Number(res.getResponseHeader('Upload-Offset'))
    this._progress(this.offset)
  }

  async _patch() {
    const end = Math.min(this.file.size, this.offset + this.options.chunkSize)
    const headers = {
      'Upload-Offset': String(this.offset),
      'Content-Type': 'application/offset+octet-stream',
    }
    const base = this.offset
    const res = await this._request('PATCH', this.url, headers, this.file.slice(base, end), (sent) =>
      this._progress(base + sent),
    )
    if (res.status !== 204) throw this._failure('send bytes', res)
    this.offset = Number(res.getResponseHeader('Upload-Offset'))
    this._attempt = 0
    this._progress(this.offset)
  }

  _progress(sent) {
    this.options.onProgress(Math.min(sent, this.file.size), this.file.size)
  }

  _failure(what, res) {
    const detail = (res.responseText || '').trim()
    return new TusError(
      `could not ${what}: ${res.status || 'network error'}${detail ? ` ${detail}` : ''}`,
      res.status,
      detail,
    )
  }

  _request(method, url, headers = {}, body = null, onUploadProgress = null) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest()
      xhr.open(method, url, true)
      xhr.setRequestHeader('Tus-Resumable', TUS_VERSION)
      for (const [name, value] of Object.entries({ ...this.options.headers, ...headers })) {
        xhr.setRequestHeader(name, value)
      }
      if (onUploadProgress) {
        xhr.upload.onprogress = (event) => onUploadProgress(event.loaded)
      }
      xhr.onload = () => resolve(xhr)
      xhr.onerror = () => reject(new TusError(`${method} ${url} failed: network error`, 0))
      xhr.onabort = () => reject(new TusError(`${method} ${url} was aborted`, 0))
      this._xhr = xhr
      xhr.send(body)
    })
  }
}
