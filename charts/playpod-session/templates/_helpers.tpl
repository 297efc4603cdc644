{{- define "session.name" -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" .Release.Name) -}}
{{- fail (printf "release name %q names the session's Service: it must start with a letter and hold only a-z, 0-9 and - (no dots)" .Release.Name) -}}
{{- end -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "session.selectorLabels" -}}
app.kubernetes.io/name: playpod-session
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end -}}

{{- define "session.labels" -}}
{{ include "session.selectorLabels" . }}
app.kubernetes.io/component: game-session
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
playpod.io/game: {{ .Values.gameName | quote }}
{{- end -}}

{{/* The catalog entry of gameName, or a clear failure. */}}
{{- define "session.game" -}}
{{- if not (hasKey .Values.games .Values.gameName) -}}
{{- fail (printf "gameName %q is not in games (known: %s)" .Values.gameName (keys .Values.games | sortAlpha | join ", ")) -}}
{{- end -}}
{{- toJson (index .Values.games .Values.gameName) -}}
{{- end -}}

{{/* randomPath, checked: it is the only secret of the session. */}}
{{- define "session.token" -}}
{{- $token := required "randomPath is required: the session's secret path (openssl rand -hex 16)" .Values.randomPath -}}
{{- if not (regexMatch "^[A-Za-z0-9_-]{16,128}$" $token) -}}
{{- fail "randomPath must be 16 to 128 characters of A-Z a-z 0-9 - _ (openssl rand -hex 16)" -}}
{{- end -}}
{{- $token -}}
{{- end -}}

{{- define "session.streamerImage" -}}
{{- if .Values.streamer.digest -}}
{{- printf "%s@%s" .Values.streamer.repository .Values.streamer.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.streamer.repository (.Values.streamer.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Must match shell/src/control/manifests.rs: tests/charts/check.py compares the two. */}}
{{- define "session.containerSecurity" -}}
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
privileged: false
readOnlyRootFilesystem: true
runAsGroup: {{ .Values.runAsUser }}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "session.sharedEnv" -}}
- name: DISPLAY
  value: ":0"
- name: PULSE_SERVER
  value: unix:/run/playpod/pulse/native
- name: PULSE_RUNTIME_PATH
  value: /run/playpod/pulse
- name: HOME
  value: /tmp
{{- end -}}

{{- define "session.sharedMounts" -}}
- mountPath: /run/playpod/fb
  name: framebuffer
- mountPath: /tmp/.X11-unix
  name: x11
- mountPath: /run/playpod/pulse
  name: pulse
{{- end -}}
