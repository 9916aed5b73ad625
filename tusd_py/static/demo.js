// The demo page: each chosen or dropped file becomes a row with progress, pause/resume and,
// once finished, a download link. `?chunkSize=<bytes>` splits uploads into several PATCHes.
import { TusUpload } from './tus-client.js'

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

function addUpload(file) {
  const row = element('li', 'upload')
  const name = element('span', 'name', file.name)
  const actions = element('span', 'actions')
  const toggle = element('button', 'toggle', 'Pause')
  toggle.type = 'button'
  actions.append(toggle)
  const bar = element('progress')
  bar.max = file.size || 1
  bar.value = 0
  const status = element('span', 'status', 'starting…')
  row.append(name, actions, bar, status)
  list.prepend(row)

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
      if (!upload.paused) setState('uploading', `${progressText(sent)} · ${Math.floor((sent / (total || 1)) * 100)}%`)
    },
    onSuccess() {
      bar.value = bar.max
      row.dataset.url = upload.url
      setState('done', `done · ${formatBytes(file.size)}`)
      toggle.remove()
      const link = element('a', 'download', 'Download')
      link.href = upload.url
      link.download = file.name
      actions.append(link)
    },
    onError(err) {
      setState('error', err.message)
      toggle.textContent = 'Retry'
    },
  })

  toggle.addEventListener('click', () => {
    if (upload.paused) {
      toggle.textContent = 'Pause'
      setState('uploading', `resuming · ${progressText(upload.offset)}`)
      upload.start()
    } else {
      upload.pause()
      toggle.textContent = 'Resume'
      setState('paused', `paused · ${progressText(Number(row.dataset.offset || 0))}`)
    }
  })
  setState('uploading', 'starting…')
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
