{{/* Names, labels and the pieces the Deployment, the pull Job and the tests share. */}}

{{- define "slmctl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slmctl.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "slmctl.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slmctl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slmctl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "slmctl.labels" -}}
helm.sh/chart: {{ include "slmctl.chart" . }}
{{ include "slmctl.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "slmctl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "slmctl.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "slmctl.image" -}}
{{- printf "%s:%s%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) .Values.image.tagSuffix }}
{{- end }}

{{- define "slmctl.keysSecret" -}}
{{- default (printf "%s-keys" (include "slmctl.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "slmctl.claimName" -}}
{{- default (printf "%s-models" (include "slmctl.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* The pull Job's name: a new model list, pull flags or image make a new Job (Jobs are immutable). */}}
{{- define "slmctl.pullJobName" -}}
{{- $hash := dict "models" .Values.models "args" .Values.pullJob.extraArgs "image" (include "slmctl.image" .) | toJson | sha256sum | trunc 8 }}
{{- printf "%s-pull-%s" (include "slmctl.fullname" . | trunc 44 | trimSuffix "-") $hash }}
{{- end }}

{{- define "slmctl.validate" -}}
{{- if not .Values.models }}
{{- fail "models: list at least one model to pull and serve" }}
{{- end }}
{{- if not (has .Values.persistence.mode (list "shared" "emptyDir")) }}
{{- fail "persistence.mode must be shared or emptyDir" }}
{{- end }}
{{- if not (has .Values.autoscaling.mode (list "hpa" "keda")) }}
{{- fail "autoscaling.mode must be hpa or keda" }}
{{- end }}
{{- if .Values.podDisruptionBudget.enabled }}
{{- $least := ternary .Values.autoscaling.minReplicas .Values.replicaCount .Values.autoscaling.enabled | int }}
{{- if ge (int .Values.podDisruptionBudget.minAvailable) $least }}
{{- fail (printf "podDisruptionBudget.minAvailable (%v) must be below the replica count (%v), or no pod could ever be evicted" .Values.podDisruptionBudget.minAvailable $least) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The store volume: the shared claim (read-only for the replicas), or the pod's own emptyDir.
     Takes (list $ readOnly). */}}
{{- define "slmctl.modelVolume" -}}
{{- $ := index . 0 }}{{ $readOnly := index . 1 -}}
- name: models
{{- if eq $.Values.persistence.mode "shared" }}
  persistentVolumeClaim:
    claimName: {{ include "slmctl.claimName" $ }}
    {{- if $readOnly }}
    readOnly: true
    {{- end }}
{{- else }}
  emptyDir:
    sizeLimit: {{ $.Values.persistence.size }}
{{- end }}
{{- end }}

{{/* A container that runs `slmctl pull MODEL` into a writable store at /data. */}}
{{- define "slmctl.pullContainer" -}}
{{- $ := index . 0 }}{{ $index := index . 1 }}{{ $model := index . 2 -}}
- name: pull-{{ $index }}
  image: {{ include "slmctl.image" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  args:
    - pull
    - {{ $model | quote }}
    {{- range $.Values.pullJob.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: SLMCTL_HOME
      value: /data
    - name: HOME
      value: /tmp
    {{- with $.Values.pullJob.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  securityContext:
    {{- toYaml $.Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml $.Values.pullJob.resources | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: /data
    - name: tmp
      mountPath: /tmp
{{- end }}
