{{/* The name of the chart's objects: <release>-playpod, or the release name if it holds "playpod". */}}
{{- define "playpod.fullname" -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" .Release.Name) -}}
{{- fail (printf "release name %q names the control plane's Service: it must start with a letter and hold only a-z, 0-9 and - (no dots)" .Release.Name) -}}
{{- end -}}
{{- if contains "playpod" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-playpod" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "playpod.selectorLabels" -}}
app.kubernetes.io/name: playpod
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/component: control-plane
{{- end -}}

{{- define "playpod.labels" -}}
{{ include "playpod.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels of the session pods the control plane makes (see shell/src/control/manifests.rs). */}}
{{- define "playpod.sessionSelector" -}}
app.kubernetes.io/managed-by: playpod
app.kubernetes.io/component: game-session
{{- end -}}

{{- define "playpod.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "playpod.apiSecretName" -}}
{{- .Values.apiToken.existingSecret | default (printf "%s-api" (include "playpod.fullname" .)) -}}
{{- end -}}

{{/* The API token: the value given, else the one already in the cluster, else a new one. `lookup`
finds nothing under `helm template` (Argo CD, Flux): such renders must set apiToken.value or
apiToken.existingSecret, or each makes a new token (see values.yaml). */}}
{{- define "playpod.apiToken" -}}
{{- if .Values.apiToken.value -}}
{{- .Values.apiToken.value -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "playpod.apiSecretName" .) -}}
{{- if and $existing $existing.data (hasKey $existing.data "token") -}}
{{- index $existing.data "token" | b64dec -}}
{{- else -}}
{{- randAlphaNum 40 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* What the control plane reads as session.json. */}}
{{- define "playpod.sessionConfig" -}}
{{- $s := deepCopy .Values.sessions -}}
{{- if not $s.streamer.image -}}
{{- $_ := set $s.streamer "image" (include "playpod.image" .) -}}
{{- end -}}
{{- toPrettyJson $s -}}
{{- end -}}

{{/* The locked-down security context of every container. */}}
{{- define "playpod.containerSecurity" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsUser }}
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
