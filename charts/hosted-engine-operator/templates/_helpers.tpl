{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "hosted-engine-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, unless it already contains the chart name. */}}
{{- define "hosted-engine-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "hosted-engine-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object of the release carries. */}}
{{- define "hosted-engine-operator.labels" -}}
helm.sh/chart: {{ include "hosted-engine-operator.chart" . }}
{{ include "hosted-engine-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hosted-engine-operator
{{- end }}

{{/* Labels the Deployment selects its pods by. */}}
{{- define "hosted-engine-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hosted-engine-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "hosted-engine-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hosted-engine-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hosted-engine-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The liveness URL kopf serves (`hosted-engine run --liveness`). */}}
{{- define "hosted-engine-operator.livenessURL" -}}
{{- printf "http://0.0.0.0:%d%s" (int .Values.liveness.port) .Values.liveness.path }}
{{- end }}
