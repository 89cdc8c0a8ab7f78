{{/* Names */}}
{{- define "patron.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "patron.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "patron.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "patron.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The Kubernetes name of one service's objects: <fullname>-<service>. */}}
{{- define "patron.serviceName" -}}
{{- printf "%s-%s" (include "patron.fullname" .root) .service | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "patron.secretName" -}}
{{- default (printf "%s-secrets" (include "patron.fullname" .)) .Values.existingSecret -}}
{{- end -}}

{{- define "patron.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "patron.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels: app.kubernetes.io/* on every object; component = the service. */}}
{{- define "patron.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "patron.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: patron
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "patron.selectorLabels" -}}
app.kubernetes.io/name: {{ include "patron.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "patron.image" -}}
{{- $tag := default .root.Chart.AppVersion .root.Values.image.tag -}}
{{- if .binary -}}
{{- printf "%s-%s:%s" .root.Values.image.repository .binary $tag -}}
{{- else -}}
{{- printf "%s:%s" .root.Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The gRPC services this release serves, in a stable order. */}}
{{- define "patron.enabledServices" -}}
{{- $out := list -}}
{{- range $name := list "profile" "scoring" "feedback" "campaign" -}}
{{- if (index $.Values.services $name).enabled -}}
{{- $out = append $out $name -}}
{{- end -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* "section.key" -> PATRON_SECTION__KEY */}}
{{- define "patron.envName" -}}
{{- printf "PATRON_%s" (. | replace "." "__" | upper) -}}
{{- end -}}

{{/* Secret-backed environment every Patron container gets. */}}
{{- define "patron.secretEnv" -}}
- name: DATABASE_URL
  valueFrom: { secretKeyRef: { name: {{ include "patron.secretName" . }}, key: DATABASE_URL } }
- name: REDIS_URL
  valueFrom: { secretKeyRef: { name: {{ include "patron.secretName" . }}, key: REDIS_URL, optional: true } }
- name: PATRON_AUTH__TOKENS
  valueFrom: { secretKeyRef: { name: {{ include "patron.secretName" . }}, key: PATRON_AUTH__TOKENS, optional: true } }
{{- if .Values.auth.jwt.enabled }}
- name: PATRON_AUTH__JWT__KEY
  valueFrom: { secretKeyRef: { name: {{ include "patron.secretName" . }}, key: PATRON_AUTH__JWT__KEY } }
{{- end }}
{{- end -}}
