{{/* Names: <release>-dualtune unless the release name already says dualtune. */}}
{{- define "dualtune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dualtune.fullname" -}}
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

{{/* Component names stay under 63 characters with their suffix, and KubeRay adds
"-head-svc" / "-<group>-worker-xxxxx" to the RayCluster's name, so that one is shorter. */}}
{{- define "dualtune.serviceName" -}}
{{- include "dualtune.fullname" . | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- define "dualtune.mlflowName" -}}
{{- printf "%s-mlflow" (include "dualtune.fullname" . | trunc 48 | trimSuffix "-") }}
{{- end }}
{{- define "dualtune.postgresqlName" -}}
{{- printf "%s-postgresql" (include "dualtune.fullname" . | trunc 44 | trimSuffix "-") }}
{{- end }}
{{- define "dualtune.rayClusterName" -}}
{{- printf "%s-ray" (include "dualtune.fullname" . | trunc 36 | trimSuffix "-") }}
{{- end }}
{{- define "dualtune.rayAuthSecretName" -}}
{{- .Values.ray.auth.existingSecret | default (printf "%s-ray-auth" (include "dualtune.fullname" . | trunc 50 | trimSuffix "-")) }}
{{- end }}
{{- define "dualtune.postgresqlSecretName" -}}
{{- .Values.postgresql.auth.existingSecret | default (include "dualtune.postgresqlName" .) }}
{{- end }}
{{- define "dualtune.sharedClaimName" -}}
{{- .Values.ray.sharedStorage.existingClaim | default (printf "%s-ray-shared" (include "dualtune.fullname" . | trunc 48 | trimSuffix "-")) }}
{{- end }}
{{- define "dualtune.mlflowClaimName" -}}
{{- .Values.mlflow.artifacts.pvc.existingClaim | default (printf "%s-artifacts" (include "dualtune.mlflowName" .)) }}
{{- end }}

{{- define "dualtune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "dualtune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dualtune
{{- end }}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "api"). */}}
{{- define "dualtune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dualtune.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "dualtune.componentLabels" -}}
{{ include "dualtune.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* image: include with (dict "ctx" $ "image" .Values.service.image). */}}
{{- define "dualtune.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .ctx.Chart.AppVersion) }}
{{- end }}

{{/* Pod spec lines: include with (dict "ctx" $ "indent" N) where the pod spec's keys are. */}}
{{- define "dualtune.imagePullSecrets" -}}
{{- with .ctx.Values.imagePullSecrets }}
{{- printf "imagePullSecrets:\n%s" (toYaml . | indent 2) | nindent $.indent }}
{{- end }}
{{- end }}

{{- define "dualtune.postgresqlHost" -}}
{{- printf "%s.%s.svc" (include "dualtune.postgresqlName" .) .Release.Namespace }}
{{- end }}

{{/* The environment that gives a container DUALTUNE_DATABASE_URL: from the external Secret,
or composed from the bundled Postgres's password ($(VAR) is expanded by Kubernetes). */}}
{{- define "dualtune.databaseEnv" -}}
{{- if .Values.postgresql.enabled }}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "dualtune.postgresqlSecretName" . }}
      key: password
- name: DUALTUNE_DATABASE_URL
  value: {{ printf "postgresql://%s:$(POSTGRES_PASSWORD)@%s:5432/%s" .Values.postgresql.auth.username (include "dualtune.postgresqlHost" .) .Values.postgresql.auth.database | quote }}
{{- else }}
- name: DUALTUNE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "postgresql.enabled is false: set externalDatabase.existingSecret" .Values.externalDatabase.existingSecret }}
      key: {{ .Values.externalDatabase.serviceUrlKey }}
{{- end }}
{{- end }}

{{- define "dualtune.mlflowBackendEnv" -}}
{{- if .Values.postgresql.enabled }}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "dualtune.postgresqlSecretName" . }}
      key: password
- name: MLFLOW_BACKEND_STORE_URI
  value: {{ printf "postgresql://%s:$(POSTGRES_PASSWORD)@%s:5432/%s" .Values.postgresql.auth.username (include "dualtune.postgresqlHost" .) .Values.postgresql.auth.mlflowDatabase | quote }}
{{- else }}
- name: MLFLOW_BACKEND_STORE_URI
  valueFrom:
    secretKeyRef:
      name: {{ required "postgresql.enabled is false: set externalDatabase.existingSecret" .Values.externalDatabase.existingSecret }}
      key: {{ .Values.externalDatabase.mlflowUrlKey }}
{{- end }}
{{- end }}

{{/* Ray token auth for every Ray container and for the service's Ray Jobs client. */}}
{{- define "dualtune.rayAuthEnv" -}}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "dualtune.rayAuthSecretName" . }}
      key: auth_token
{{- end }}

{{- define "dualtune.mlflowInternalUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "dualtune.mlflowName" .) .Release.Namespace (int .Values.mlflow.port) }}
{{- end }}

{{- define "dualtune.mlflowUiUrl" -}}
{{- if .Values.mlflow.uiUrl }}
{{- .Values.mlflow.uiUrl }}
{{- else if and .Values.ingress.enabled .Values.ingress.mlflow.host }}
{{- $scheme := ternary "https" "http" (gt (len .Values.ingress.tls) 0) }}
{{- printf "%s://%s" $scheme .Values.ingress.mlflow.host }}
{{- else }}
{{- printf "http://127.0.0.1:%d" (int .Values.mlflow.port) }}
{{- end }}
{{- end }}

{{/* A random secret value that survives upgrades: the live Secret's, else a new one on
install. On an upgrade the Secret must already exist: a lookup that finds nothing there means
Helm cannot see the cluster (`helm template`, `--dry-run=client`, a GitOps renderer) or the
Secret was deleted, and a fresh random value would lock the service out of a Postgres whose
volume kept the old password, or leave running Ray pods on the old token. So the render fails
and says what to do instead. */}}
{{- define "dualtune.stableRandom" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key }}
{{- else if .ctx.Release.IsUpgrade }}
{{- fail (printf "upgrade: the generated Secret %s (key %s) was not found in namespace %s, so Helm would make a new %s that the running release does not know. Upgrade with a live cluster connection (not --dry-run=client or helm template), or create the Secret yourself and set %s to its name (helm/dualtune/README.md, \"Secrets\")." .name .key .ctx.Release.Namespace .what .value) }}
{{- else }}
{{- randAlphaNum .length | b64enc }}
{{- end }}
{{- end }}

{{/* Ray pods: Ray writes its session under /tmp and Tune's storage under the shared mount;
Ray's runtime environments write under $HOME, so the root filesystem stays writable. */}}
{{- define "dualtune.rayContainerSecurityContext" -}}
{{- $context := deepCopy .Values.containerSecurityContext }}
{{- $_ := set $context "readOnlyRootFilesystem" false }}
{{- toYaml $context }}
{{- end }}

{{- define "dualtune.rayVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: shared
  mountPath: {{ .Values.ray.sharedStorage.mountPath }}
- name: dshm
  mountPath: /dev/shm
{{- end }}

{{- define "dualtune.rayVolumes" -}}
- name: tmp
  emptyDir: {}
- name: shared
  {{- if .Values.ray.sharedStorage.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "dualtune.sharedClaimName" . }}
  {{- else }}
  emptyDir: {}
  {{- end }}
# Ray's object store lives in shared memory; the container default (64Mi) is far too small.
- name: dshm
  emptyDir:
    medium: Memory
{{- end }}

{{/* Whole CPUs of a resources block (limits, else requests) for `ray start --num-cpus`,
which takes an integer: "8" -> 8, "7500m" -> 7, at least 1. */}}
{{- define "dualtune.wholeCpus" -}}
{{- $cpu := toString (default (dig "requests" "cpu" "1" .) (dig "limits" "cpu" "" .)) }}
{{- if hasSuffix "m" $cpu }}
{{- max 1 (div (atoi (trimSuffix "m" $cpu)) 1000) }}
{{- else }}
{{- max 1 (int (float64 $cpu)) }}
{{- end }}
{{- end }}

{{/* A worker group's pod template: include with (dict "ctx" $ "group" ... "component" ...
"image" ... "gpus" N). */}}
{{/* "true" when the operator has spec.autoscalerOptions.version (KubeRay >= 1.4), else "". */}}
{{- define "dualtune.kuberayHasAutoscalerVersion" -}}
{{- if semverCompare ">=1.4.0-0" .Values.ray.operatorVersion }}true{{ end }}
{{- end }}

{{- define "dualtune.rayWorkerTemplate" -}}
{{- $ctx := .ctx }}
{{- $resources := deepCopy .group.resources }}
{{- if gt (int .gpus) 0 }}
{{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" (int .gpus)) (default (dict) $resources.limits)) }}
{{- end -}}
metadata:
  labels:
    {{- include "dualtune.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
spec:
  {{- include "dualtune.imagePullSecrets" (dict "ctx" $ctx "indent" 2) }}
  {{- if eq $ctx.Values.ray.autoscaler.version "v2" }}
  restartPolicy: Never
  {{- end }}
  securityContext:
    {{- toYaml $ctx.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: ray-worker
      image: {{ .image }}
      imagePullPolicy: {{ $ctx.Values.ray.image.pullPolicy }}
      env:
        {{- include "dualtune.rayAuthEnv" $ctx | nindent 8 }}
      resources:
        {{- toYaml $resources | nindent 8 }}
      securityContext:
        {{- include "dualtune.rayContainerSecurityContext" $ctx | nindent 8 }}
      volumeMounts:
        {{- include "dualtune.rayVolumeMounts" $ctx | nindent 8 }}
  volumes:
    {{- include "dualtune.rayVolumes" $ctx | nindent 4 }}
  {{- with .group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
