// The demo page: each chosen or dropped file becomes a row with progress, speed and time left,
// pause/resume, cancel and, once finished, a download link. Choosing the same file again after a
// page reload resumes its upload from the server's offset. `?chunkSize=<bytes>` splits uploads
// into several PATCHes.
import { TusUpload, retriable } from './tus-client.js'

const endpoint = document.body.dataset.endpoint
const chunkSize = Number(new URLSearchParams(window.location.search).get('chunkSize')) || Infinity
const list = document.getElementById('uploads')
const drop = document.getElementById('drop')
const input = document.getElementById('files')

function formatBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}

function element(tag, className, text) {
  const el = document.createElement(tag)
  if (className) el.className = className
  if (text !== undefined) el.textContent = text
  return el
}

function formatSeconds(seconds) {
  if (!Number.isFinite(seconds)) return '…'
  if (seconds < 60) return `${Math.ceil(seconds)} s`
  const minutes = Math.floor(seconds / 60)
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`
}

// Bytes per second over the last few seconds of progress, for the speed and time left.
function rateMeter(windowMs = 5000) {
  const samples = []
  return {
    add(bytes) {
      const now = performance.now()
      samples.push([now, bytes])
      while (samples.length > 2 && now - samples[0][0] > windowMs) samples.shift()
    },
    reset() {
      samples.length = 0
    },
    rate() {
      if (samples.length < 2) return 0
      const [t0, b0] = samples[0]
      const [t1, b1] = samples[samples.length - 1]
      return t1 > t0 ? ((b1 - b0) * 1000) / (t1 - t0) : 0
    },
  }
}

function addUpload(file) {
  const row = element('li', 'upload')
  const name = element('span', 'name', file.name)
  const actions = element('span', 'actions')
  const toggle = element('button', 'toggle', 'Pause')
  toggle.type = 'button'
  const cancel = element('button', 'cancel', 'Cancel')
  cancel.type = 'button'
  actions.append(toggle, cancel)
  const bar = element('progress')
  bar.max = file.size || 1
  bar.value = 0
  const status = element('span', 'status', 'starting…')
  row.append(name, actions, bar, status)
  list.prepend(row)

  const meter = rateMeter()
  const setState = (state, text) => {
    row.dataset.state = state
    status.textContent = text
  }
  const progressText = (sent) => `${formatBytes(sent)} of ${formatBytes(file.size)}`

  const upload = new TusUpload(file, {
    endpoint,
    chunkSize,
    onProgress(sent, total) {
      bar.value = sent
      row.dataset.offset = String(sent)
      if (upload.url) row.dataset.url = upload.url
      if (upload.paused) return
      meter.add(sent)
      const rate = meter.rate()
      const percent = Math.floor((sent / (total || 1)) * 100)
      const speed = rate > 0 ? ` · ${formatBytes(rate)}/s · ${formatSeconds((total - sent) / rate)} left` : ''
      setState('uploading', `${progressText(sent)} · ${percent}%${speed}`)
    },
    onSuccess() {
      bar.value = bar.max
      row.dataset.url = upload.url
      setState('done', `done · ${formatBytes(file.size)}`)
      toggle.remove()
      cancel.remove()
      const link = element('a', 'download', 'Download')
      link.href = upload.url
      link.download = file.name
      actions.append(link)
    },
    onError(err) {
      meter.reset()
      if (retriable(err.status)) {
        // The network or the server: trying again later may work.
        setState('error', `${err.message} · it can be resumed`)
        toggle.textContent = 'Retry'
      } else {
        // The server refused the upload (too large, not allowed, ...): the same request would be
        // refused again, so there is nothing to retry.
        setState('failed', `the server refused this upload: ${err.body || err.message}`)
        toggle.remove()
      }
    },
  })
  if (upload.resumed) row.dataset.resumed = 'true'

  toggle.addEventListener('click', () => {
    if (upload.paused) {
      toggle.textContent = 'Pause'
      setState('uploading', `resuming · ${progressText(upload.offset)}`)
      upload.start()
    } else {
      upload.pause()
      meter.reset()
      toggle.textContent = 'Resume'
      setState('paused', `paused · ${progressText(Number(row.dataset.offset || 0))}`)
    }
  })
  cancel.addEventListener('click', async () => {
    toggle.remove()
    cancel.remove()
    setState('cancelled', 'cancelling…')
    try {
      await upload.abort()
      setState('cancelled', 'cancelled: the server removed what it had received')
    } catch (err) {
      setState('cancelled', `cancelled here; the server could not remove it: ${err.message}`)
    }
  })
  setState('uploading', upload.resumed ? 'resuming an earlier upload…' : 'starting…')
  upload.start()
}

function addAll(files) {
  for (const file of files) addUpload(file)
}

input.addEventListener('change', () => {
  addAll(input.files)
  input.value = ''
})
for (const type of ['dragenter', 'dragover']) {
  drop.addEventListener(type, (event) => {
    event.preventDefault()
    drop.classList.add('over')
  })
}
for (const type of ['dragleave', 'drop']) {
  drop.addEventListener(type, () => drop.classList.remove('over'))
}
drop.addEventListener('drop', (event) => {
  event.preventDefault()
  addAll(event.dataTransfer.files)
})
